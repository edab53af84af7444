"""The files of an ONNX export folder, shared by the exporter, its W8A16 rewrite and the runtime.

``edgefusion_export.json`` (:data:`EXPORT_INFO`) records precision, dtypes and shapes;
each component is one ``model.onnx`` (:func:`save_onnx`), with its tensors in
``model.onnx.data`` beside it when the graph is over protobuf's 2 GB, or in an OpenVINO IR export
one ``openvino_model.xml`` (:data:`IR_FILE`).
"""

from __future__ import annotations

from pathlib import Path

EXPORT_INFO = "edgefusion_export.json"
#: A component's graph in an OpenVINO IR export (``edgefusion export --format openvino``), in place
#: of ``model.onnx``; its weights are ``openvino_model.bin`` beside it.
IR_FILE = "openvino_model.xml"


def is_openvino_ir(folder: str | Path) -> bool:
    """Whether ``folder`` is an OpenVINO IR export (its U-Net an :data:`IR_FILE`)."""
    return (Path(folder) / "unet" / IR_FILE).is_file()


_PROTOBUF_LIMIT = 2**31 - 1  # above it, ONNX tensors must go to an external data file


def save_onnx(proto, file: Path) -> None:
    """Save ``proto``, with its tensors in one ``model.onnx.data`` file when it exceeds 2 GB."""
    import onnx

    external = sum(len(t.raw_data) for t in proto.graph.initializer) > _PROTOBUF_LIMIT
    onnx.save_model(
        proto,
        str(file),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=f"{file.name}.data",
    )
