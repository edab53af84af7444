"""The CPU backends ``openvino`` and ``torch-compile`` draw torch fp32's images on a micro LCM (same
prompts and seeds: PSNR >= 50 dB, i.e. float rounding); OpenVINO exports a folder once and loads
it from its cache after that; a missing OpenVINO is an error naming the extra that installs it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from micro_models import micro_unet_config, random_unet, write_pipeline

import edgefusion.export  # noqa: F401  (registers the openvino backend, as the command line does)
from edgefusion.bench.backends import check_backend
from edgefusion.errors import EdgefusionError
from edgefusion.export import onnx as onnx_export
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import generate_tensors
from edgefusion.quant.quantize import psnr_db
from edgefusion.train.lcm import write_lcm_scheduler

PROMPTS = ["a small red circle at the left on a blue background", "a large green square"]
SAME_IMAGES_DB = 50.0


@pytest.fixture(scope="module")
def micro_lcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-level micro LCM (guidance embedding, LCMScheduler): inductor generates and builds a C++
    kernel per fused operation of each shape, so the fewer layers and widths, the faster it compiles."""
    config = micro_unet_config((32,)) | {
        "down_block_types": ["CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "time_cond_proj_dim": 16,
    }
    unet = random_unet(config)
    folder = write_pipeline(tmp_path_factory.mktemp("cpu-backends") / "lcm", unet)
    write_lcm_scheduler(folder, DDIMScheduler(beta_schedule="scaled_linear").config, 50)
    return folder


@pytest.fixture(scope="module")
def fp32_images(micro_lcm: Path) -> torch.Tensor:
    return _images(load_pipeline(micro_lcm))


def _images(pipe) -> torch.Tensor:
    return generate_tensors(pipe, PROMPTS, [0, 1], steps=2, guidance=8.5)


def test_openvino_draws_the_fp32_images_and_exports_once(micro_lcm, fp32_images, tmp_path, monkeypatch):
    openvino = pytest.importorskip("openvino")
    monkeypatch.setenv("EDGEFUSION_CACHE", str(tmp_path))
    pipe = load_pipeline(micro_lcm, "openvino")
    assert psnr_db(_images(pipe), fp32_images) >= SAME_IMAGES_DB
    assert pipe.is_lcm and pipe.unet.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    assert len(list((tmp_path / "openvino").glob("*/edgefusion_export.json"))) == 1

    def no_second_export(*args, **kwargs):
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(onnx_export, "export_pipeline", no_second_export)
    again = load_pipeline(micro_lcm, "openvino", dtype=torch.bfloat16)
    images = _images(again)
    assert images.shape == fp32_images.shape and torch.isfinite(images).all()


def test_torch_compile_draws_the_fp32_images(micro_lcm, fp32_images):
    pipe = load_pipeline(micro_lcm, "torch-compile")
    assert psnr_db(_images(pipe), fp32_images) >= SAME_IMAGES_DB


def test_a_missing_openvino_names_the_extra_to_install(micro_lcm, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    extra = re.escape("pip install 'edgefusion[openvino]'")
    with pytest.raises(EdgefusionError, match=extra):
        load_pipeline(micro_lcm, "openvino")
    with pytest.raises(EdgefusionError, match=extra):
        check_backend("openvino-bf16")
