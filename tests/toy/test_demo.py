"""``edgefusion demo``: the shipped EdgeFusion model writes the demo images and a contact sheet."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from edgefusion.demo import DEMO_PROMPTS
from edgefusion.generate import read_png_metadata


def test_demo_writes_one_png_per_prompt_and_a_contact_sheet(tmp_path) -> None:
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    pngs = sorted(tmp_path.glob("0*.png"))
    assert len(pngs) == len(DEMO_PROMPTS)
    meta = read_png_metadata(pngs[0])
    assert meta["model"] == "toy:edgefusion" and meta["scheduler"] == "LCMScheduler" and meta["steps"] == 2
    assert meta["prompt"] == DEMO_PROMPTS[0]
    with Image.open(pngs[0]) as image:
        assert image.size == (64, 64)
    with Image.open(tmp_path / "contact_sheet.png") as sheet:
        assert sheet.width == 4 * 64 * 3
    assert len((tmp_path / "generations.jsonl").read_text().splitlines()) == len(DEMO_PROMPTS)
