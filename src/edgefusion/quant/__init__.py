"""W8A16 quantization of the U-Net (int8 per-channel weights, 16-bit activations), as EdgeFusion
deploys it: ``quantize_`` transforms a model in place, :mod:`~edgefusion.quant.io` saves and loads
quantized pipelines, :mod:`~edgefusion.quant.quantize` is the ``edgefusion quantize`` stage."""

from edgefusion.quant.w8a16 import W8A16Config, quantize_

__all__ = ["W8A16Config", "quantize_"]
