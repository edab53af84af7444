"""OpenVINO IR export: an fp32 IR export draws torch fp32's images in the openvino backend; a w8a8
one has int8 (FakeQuantize) activations in its U-Net only and stays close to them; ``auto`` runs
IR exports in OpenVINO and onnxruntime refuses them; missing NNCF names the extra to install."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

import edgefusion.export  # noqa: F401  (registers the openvino backend, as the command line does)
from edgefusion.errors import EdgefusionError
from edgefusion.export.openvino import OpenVinoSession
from edgefusion.export.openvino_ir import export_openvino
from edgefusion.export.runtime import load_onnx_pipeline
from edgefusion.pipeline.cpu_backend import fastest_cpu_backend
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import generate_tensors
from edgefusion.quant.quantize import psnr_db

openvino = pytest.importorskip("openvino")

PROMPTS = ["a small red circle at the left on a blue background", "a large green square"]
CALIBRATION = ["a blue triangle at the top", "a small yellow circle", "a red square at the right"]
SAME_IMAGES_DB = 50.0  # float rounding
#: int8 activations on a random micro U-Net, calibrated on 3 prompts (the toy EdgeFusion, trained
#: and calibrated on 32, keeps 36 dB).
W8A8_DB = 25.0


def _images(pipe) -> torch.Tensor:
    return generate_tensors(pipe, PROMPTS, [0, 1], steps=2, guidance=8.5)


@pytest.fixture(scope="module")
def fp32_images(micro_lcm_pipeline) -> torch.Tensor:
    return _images(load_pipeline(micro_lcm_pipeline))


@pytest.fixture(scope="module")
def fp32_ir(micro_lcm_pipeline, tmp_path_factory):
    return export_openvino(micro_lcm_pipeline, tmp_path_factory.mktemp("ir") / "fp32")


@pytest.fixture(scope="module")
def w8a8_ir(micro_lcm_pipeline, tmp_path_factory):
    pytest.importorskip("nncf")
    return export_openvino(
        micro_lcm_pipeline, tmp_path_factory.mktemp("ir") / "w8a8", "w8a8", calibration_prompts=CALIBRATION
    )


def _fake_quantize_ops(file) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in openvino.Core().read_model(str(file)).get_ops())


def test_an_fp32_ir_export_draws_the_torch_images(fp32_ir, fp32_images):
    for component in ("text_encoder", "unet", "vae_decoder"):
        names = sorted(p.name for p in (fp32_ir / component).iterdir() if p.suffix != ".json")
        assert names == ["openvino_model.bin", "openvino_model.xml"]
    pipe = load_pipeline(fp32_ir, "openvino")
    assert pipe.is_lcm
    assert psnr_db(_images(pipe), fp32_images) >= SAME_IMAGES_DB


def test_a_session_compiles_for_the_input_shapes_of_its_calls(fp32_ir):
    channels = json.loads((fp32_ir / "edgefusion_export.json").read_text())["latent_channels"]
    session = OpenVinoSession(fp32_ir / "vae_decoder" / "openvino_model.xml")
    one = session(latent_sample=torch.randn(1, channels, 8, 8))
    first = session.compiled
    assert all(port.get_partial_shape().is_static for port in first.inputs)
    session(latent_sample=torch.randn(1, channels, 8, 8))
    assert session.compiled is first  # same shapes: no new compile
    two = session(latent_sample=torch.randn(2, channels, 16, 16))
    assert session.compiled is not first and two.shape[0] == 2 and two.shape[2:] == (2 * one.shape[2],) * 2


def test_a_w8a8_export_quantizes_the_unet_activations_only(w8a8_ir, fp32_ir, fp32_images):
    assert _fake_quantize_ops(w8a8_ir / "unet" / "openvino_model.xml") > 0
    assert _fake_quantize_ops(w8a8_ir / "text_encoder" / "openvino_model.xml") == 0
    assert _fake_quantize_ops(w8a8_ir / "vae_decoder" / "openvino_model.xml") == 0
    images = _images(load_pipeline(w8a8_ir, "openvino"))
    assert not torch.equal(images, _images(load_pipeline(fp32_ir, "openvino")))  # int8 ran
    assert psnr_db(images, fp32_images) >= W8A8_DB


def test_auto_runs_an_ir_export_in_openvino_and_onnxruntime_refuses_it(fp32_ir, monkeypatch):
    monkeypatch.setattr("edgefusion.pipeline.cpu_backend.bf16_supported", lambda: False)
    assert fastest_cpu_backend(fp32_ir) == "openvino-fp32"
    monkeypatch.setattr("edgefusion.pipeline.cpu_backend.bf16_supported", lambda: True)
    assert fastest_cpu_backend(fp32_ir) == "openvino-bf16"
    with pytest.raises(EdgefusionError, match="OpenVINO IR export: run it with --backend openvino"):
        load_onnx_pipeline(fp32_ir)


def test_w8a8_without_nncf_or_prompts_and_unknown_precisions_are_clear_errors(micro_lcm_pipeline, tmp_path):
    with pytest.raises(EdgefusionError, match="needs calibration prompts"):
        export_openvino(micro_lcm_pipeline, tmp_path / "a", "w8a8")
    with pytest.raises(EdgefusionError, match="choose one of fp32, w8a8"):
        export_openvino(micro_lcm_pipeline, tmp_path / "b", "w8a16")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "nncf", None)  # import fails as if not installed
        with pytest.raises(EdgefusionError, match=re.escape("pip install 'edgefusion[openvino]'")):
            export_openvino(micro_lcm_pipeline, tmp_path / "c", "w8a8", calibration_prompts=CALIBRATION)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_the_command_line_exports_w8a8_and_reports_its_psnr(micro_lcm_pipeline, tmp_path):
    pytest.importorskip("nncf")
    from typer.testing import CliRunner

    from edgefusion.cli import app

    args = ["export", "--model", micro_lcm_pipeline, "--out", tmp_path / "ir", "--format", "openvino"]
    args += ["--precision", "w8a8", "--num-calibration-prompts", "2", "--report", "--num-prompts", "2"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["settings"]["runtime"] == "openvino" and report["psnr_db"] >= W8A8_DB
    info = json.loads((tmp_path / "ir" / "edgefusion_export.json").read_text())
    assert (info["format"], info["precision"], info["calibration_prompts"]) == ("openvino", "w8a8", 2)
