"""W8A16 quantization of the U-Net (int8 per-channel weights, 16-bit activations), as EdgeFusion
deploys it: ``quantize_`` transforms a model in place, :mod:`~edgefusion.quant.io` saves and loads
quantized pipelines, :mod:`~edgefusion.quant.quantize` is the ``edgefusion quantize`` stage.

Importing this package registers the ``w8a16`` backend of the inference layer
(:mod:`edgefusion.pipeline.registry`): it claims W8A16 folders, so ``load_pipeline(folder)`` and
``edgefusion generate --model folder`` run them with their int8 U-Net. The inference layer does
not import this package; a W8A16 folder names :mod:`edgefusion.quant.io` as its U-Net's module,
which is how a plain ``load_pipeline`` call gets this registration.
"""

from pathlib import Path

from edgefusion.pipeline.registry import register_backend
from edgefusion.quant.w8a16 import W8A16Config, quantize_

__all__ = ["W8A16Config", "quantize_"]


def _load_w8a16(path: Path, **options):
    from edgefusion.quant.io import load_quantized_pipeline  # diffusers loads only when a folder does

    return load_quantized_pipeline(path, **options)


def _is_w8a16_folder(path: Path) -> bool:
    from edgefusion.quant.io import is_quantized_folder

    return is_quantized_folder(path)


register_backend("w8a16", _load_w8a16, claims=_is_w8a16_folder)
