"""``edgefusion compress`` and ``edgefusion info`` through typer's test runner."""

from __future__ import annotations

import json

import pytest
import typer
from diffusers import UNet2DConditionModel
from typer.testing import CliRunner

from edgefusion.arch.cli import register
from edgefusion.errors import EdgefusionError


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Stands in for the main edgefusion app."""

    register(app)
    return app


def test_info_json_is_one_object_with_every_component(app) -> None:
    result = CliRunner().invoke(app, ["info", "--model", "sd-v1.4", "--variant", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["components"]["unet"]["params"] == 323_384_964
    assert set(report["components"]) == {"unet", "text_encoder", "vae_decoder"}
    assert set(report["components"]["unet"]) == {"params", "macs", "attention_macs"}


def test_info_table_names_each_component(app) -> None:
    result = CliRunner().invoke(app, ["info", "sd-v1.5", "--resolution", "256"], terminal_width=120)
    assert result.exit_code == 0, result.output
    for text in ("U-Net", "text encoder", "VAE decoder", "859.5M", "latent 32x32"):
        assert text in result.output


def test_compress_writes_a_unet_and_reports_sizes(app, tmp_path, micro_config, make_unet) -> None:
    make_unet(micro_config()).save_pretrained(tmp_path / "teacher")
    args = [
        "compress",
        "--teacher",
        str(tmp_path / "teacher"),
        "--variant",
        "base",
        "--out",
        str(tmp_path / "s"),
    ]
    result = CliRunner().invoke(app, args, terminal_width=120)
    assert result.exit_code == 0, result.output
    student = UNet2DConditionModel.from_pretrained(tmp_path / "s")
    assert f"{sum(p.numel() for p in student.parameters()):,}" in result.output
    assert "copied from the teacher" in result.output

    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, EdgefusionError) and "--overwrite" in str(again.exception)
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_commands_are_documented(app) -> None:
    for command in ("compress", "info"):
        result = CliRunner().invoke(app, [command, "--help"], terminal_width=120)
        assert result.exit_code == 0 and "--variant" in result.output
