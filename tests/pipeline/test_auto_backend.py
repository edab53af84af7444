"""Backend names with a compute type (``torch-bf16``, ``openvino-bf16``) and ``auto``, the default of
``edgefusion generate``: which backend it picks on which CPU and folder, that records name the
backend that ran, and that each picked backend draws fp32's images (>= 30 dB PSNR)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from micro_models import random_unet, write_lcm_pipeline, write_pipeline, write_tiny_decoder
from typer.testing import CliRunner

import edgefusion.export  # noqa: F401  (registers the openvino backend, as the command line does)
from edgefusion.errors import EdgefusionError
from edgefusion.generate import generate
from edgefusion.pipeline import cpu_backend
from edgefusion.pipeline.cpu_backend import fastest_cpu_backend, split_backend
from edgefusion.quant.quantize import psnr_db

PROMPTS = ["a small red circle at the left on a blue background", "a large green square"]
FAITHFUL_DB = 30.0


@pytest.fixture(scope="module")
def lcm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lcm_pipeline(tmp_path_factory.mktemp("auto") / "lcm")


def _pixels(folder: Path) -> torch.Tensor:
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    return torch.tensor(np.stack([np.asarray(Image.open(f), dtype=np.float32) / 255 for f in files]))


@pytest.mark.parametrize(
    "name,expected",
    [
        ("torch", ("torch", torch.float32)),
        ("torch-fp32", ("torch", torch.float32)),
        ("torch-bf16", ("torch", torch.bfloat16)),
        ("torch-compile-bf16", ("torch-compile", torch.bfloat16)),
        ("openvino-bf16", ("openvino", torch.bfloat16)),
        ("onnxruntime", ("onnxruntime", torch.float32)),
    ],
)
def test_a_backend_name_splits_into_loader_and_compute_type(name, expected):
    assert split_backend(name) == expected


def test_a_compute_type_for_a_runtime_that_fixes_its_own_is_refused():
    with pytest.raises(EdgefusionError, match="not to 'onnxruntime'"):
        split_backend("onnxruntime-bf16")


def test_auto_picks_by_cpu_runtime_and_folder(lcm_model, tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_backend, "bf16_supported", lambda: True)
    monkeypatch.setattr(cpu_backend, "openvino_available", lambda: True)
    assert fastest_cpu_backend(lcm_model) == "openvino-bf16"
    # The graph runtimes sample with the saved scheduler: another one keeps torch.
    assert fastest_cpu_backend(lcm_model, scheduler="lcm") == "torch-bf16"
    monkeypatch.setattr(cpu_backend, "openvino_available", lambda: False)
    assert fastest_cpu_backend(lcm_model) == "torch-bf16"
    monkeypatch.setattr(cpu_backend, "bf16_supported", lambda: False)
    assert fastest_cpu_backend(lcm_model) == "torch-fp32"
    monkeypatch.setattr(cpu_backend, "openvino_available", lambda: True)
    assert fastest_cpu_backend(lcm_model) == "openvino-fp32"
    export = tmp_path / "export"
    (export / "unet").mkdir(parents=True)
    (export / "unet" / "model.onnx").write_bytes(b"")
    assert fastest_cpu_backend(export) == "onnxruntime"


def test_auto_keeps_fp32_activations_for_a_25_step_model(tmp_path, monkeypatch):
    """bf16 rounding compounds over a 25-step sampler; only few-step (LCM) U-Nets get bf16."""
    monkeypatch.setattr(cpu_backend, "bf16_supported", lambda: True)
    monkeypatch.setattr(cpu_backend, "openvino_available", lambda: True)
    model = write_pipeline(tmp_path / "sd", random_unet())
    assert fastest_cpu_backend(model) == "openvino-fp32"
    monkeypatch.setattr(cpu_backend, "openvino_available", lambda: False)
    assert fastest_cpu_backend(model) == "torch-fp32"


def test_openvino_available_follows_the_package(monkeypatch):
    import sys

    if cpu_backend.openvino_available():
        monkeypatch.setitem(sys.modules, "openvino", None)
        monkeypatch.setattr(cpu_backend.importlib.util, "find_spec", lambda name: None)
    assert not cpu_backend.openvino_available()


def test_generate_in_bf16_draws_fp32_images_and_records_its_backend(lcm_model, tmp_path):
    common = dict(steps=2, seed=3, progress=False)
    fp32 = generate(PROMPTS, lcm_model, out=tmp_path / "fp32", backend="torch", **common)
    bf16 = generate(PROMPTS, lcm_model, out=tmp_path / "bf16", backend="torch-bf16", **common)
    assert fp32[0]["backend"] == "torch" and bf16[0]["backend"] == "torch-bf16"
    assert psnr_db(_pixels(tmp_path / "bf16"), _pixels(tmp_path / "fp32")) >= FAITHFUL_DB


def test_the_command_line_generates_with_auto_and_names_the_backend_it_ran(lcm_model, tmp_path, monkeypatch):
    from edgefusion.cli import _register_subcommands, app

    monkeypatch.setenv("EDGEFUSION_CACHE", str(tmp_path / "cache"))
    _register_subcommands()
    args = ["generate", *PROMPTS, "--model", str(lcm_model), "--steps", "2", "--seed", "3"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "auto")])
    assert result.exit_code == 0, result.output
    chosen = fastest_cpu_backend(lcm_model)
    log = (tmp_path / "auto" / "generations.jsonl").read_text()
    assert f'"backend": "{chosen}"' in log
    fp32 = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "fp32"), "--backend", "torch"])
    assert fp32.exit_code == 0, fp32.output
    assert psnr_db(_pixels(tmp_path / "auto"), _pixels(tmp_path / "fp32")) >= FAITHFUL_DB


def test_openvino_decodes_with_the_given_vae(tmp_path, monkeypatch):
    """OpenVINO exports the model with ``--vae`` as its decoder graph: the images match torch's with
    the same decoder swapped in."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("EDGEFUSION_CACHE", str(tmp_path / "cache"))
    model = write_pipeline(tmp_path / "sd", random_unet())
    common = dict(steps=2, seed=3, progress=False, vae=write_tiny_decoder(tmp_path / "taesd"))
    generate(PROMPTS, model, out=tmp_path / "torch", backend="torch", **common)
    records = generate(PROMPTS, model, out=tmp_path / "openvino", backend="openvino", **common)
    assert records[0]["backend"] == "openvino" and records[0]["vae"] == str(tmp_path / "taesd")
    assert psnr_db(_pixels(tmp_path / "openvino"), _pixels(tmp_path / "torch")) >= FAITHFUL_DB
