"""The full-size BK-SDM-Tiny U-Net (SD-v1 shapes, random weights) through ONNX and onnxruntime.

Slow (minutes, ~6 GB of memory), so deselected by default; run it with
``.venv/bin/python -m pytest -m slow tests/export/test_full_size.py``.
"""

import pytest
import torch

from edgefusion.arch.compression import compress
from edgefusion.export.onnx import export_unet
from edgefusion.export.runtime import OrtSession
from edgefusion.pipeline.configs import builtin_config
from edgefusion.quant.w8a16 import W8A16Config


@pytest.mark.slow
def test_bk_tiny_unet_exports_and_runs_one_step(tmp_path):
    unet = compress(builtin_config("sd-v1", "unet"), "tiny").eval()
    g = torch.Generator().manual_seed(0)
    inputs = {
        "sample": torch.randn(2, 4, 64, 64, generator=g),
        "timestep": torch.tensor([999.0, 999.0]),
        "encoder_hidden_states": torch.randn(2, 77, 768, generator=g),
    }
    with torch.no_grad():
        expected = unet(
            **{k: inputs[k] for k in ("sample", "encoder_hidden_states")}, timestep=inputs["timestep"]
        )
    expected = expected.sample
    fp32 = tmp_path / "fp32" / "model.onnx"
    export_unet(unet, fp32, (64, 64))
    got = OrtSession(fp32, threads=None)(**inputs)
    assert got.shape == (2, 4, 64, 64)
    assert (got - expected).abs().max() <= 1e-3 * expected.abs().max()

    w8a16 = tmp_path / "w8a16" / "model.onnx"
    export_unet(unet, w8a16, (64, 64), quant_config=W8A16Config())
    assert w8a16.stat().st_size < 0.27 * fp32.stat().st_size
    quantized = OrtSession(w8a16, threads=None)(**inputs)
    assert torch.isfinite(quantized).all()
    assert (quantized - expected).norm() / expected.norm() < 0.05
