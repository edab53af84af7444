"""ONNX export of a pipeline (:mod:`~edgefusion.export.onnx`, W8A16 as QDQ in
:mod:`~edgefusion.export.qdq`) and generation from the export in onnxruntime
(:mod:`~edgefusion.export.runtime`).

Importing this package registers the ``onnxruntime`` and ``openvino`` (:mod:`~edgefusion.export.openvino`)
backends of the inference layer (:mod:`edgefusion.pipeline.registry`), which does not import this
package.
"""

from pathlib import Path

from edgefusion.pipeline.registry import register_backend


def _load_onnxruntime(path: Path, **options):
    from edgefusion.export.runtime import load_onnxruntime_backend  # onnxruntime loads only when used

    return load_onnxruntime_backend(path, **options)


register_backend("onnxruntime", _load_onnxruntime)


def _load_openvino(path: Path, **options):
    from edgefusion.export.openvino import load_openvino_backend  # openvino loads only when used

    return load_openvino_backend(path, **options)


register_backend("openvino", _load_openvino)
