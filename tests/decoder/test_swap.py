"""``--vae DIR`` on micro models: ``generate`` decodes with the given decoder exactly as a plain
diffusers pipeline with that VAE does, ``export`` writes it as the ONNX decoder, ``decoder
compare`` measures it, and every bad decoder folder is one clear error."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny, StableDiffusionPipeline
from micro_models import IMAGE_SIZE
from PIL import Image
from typer.testing import CliRunner

from edgefusion.decoder.compare import compare_decoders
from edgefusion.errors import EdgefusionError
from edgefusion.eval.protocol import EvalConfig, evaluate
from edgefusion.export.runtime import OrtSession
from edgefusion.generate import generate, read_png_metadata
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.vae import load_decoder, swap_decoder
from edgefusion.quant.quantize import ReportSettings
from edgefusion.toy.metrics import evaluate_toy_model

PROMPTS = ["a red circle", "a small blue square at the left on a white background"]


def _cli(*args: str):
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    return CliRunner().invoke(app, list(args))


def _pixels(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("*.png"))]


def _save_tiny(folder: Path, **config) -> Path:
    torch.manual_seed(0)
    AutoencoderTiny(**config).save_pretrained(folder)
    return folder


def test_generate_vae_decodes_as_diffusers_does_with_that_vae(sd_model, tiny_folder, tmp_path) -> None:
    common = ["generate", *PROMPTS, "--model", str(sd_model), "--steps", "2", "--seed", "5"]
    assert _cli(*common, "--out", str(tmp_path / "full")).exit_code == 0
    result = _cli(*common, "--out", str(tmp_path / "tiny"), "--vae", str(tiny_folder))
    assert result.exit_code == 0, result.output

    full, tiny = _pixels(tmp_path / "full"), _pixels(tmp_path / "tiny")
    vae = AutoencoderTiny.from_pretrained(tiny_folder)
    pipe = StableDiffusionPipeline.from_pretrained(sd_model, vae=vae, safety_checker=None)
    for k, prompt in enumerate(PROMPTS):
        generator = torch.Generator().manual_seed(5 + k)
        expected = pipe(prompt, num_inference_steps=2, generator=generator, output_type="np").images[0]
        assert np.abs(tiny[k] - np.round(expected * 255)).max() <= 1
        assert np.abs(tiny[k] - full[k]).mean() > 10  # another decoder, other pixels
    assert read_png_metadata(tmp_path / "tiny" / "00000.png")["vae"] == str(tiny_folder)
    # The folder holds one run: the same images without --vae are other images.
    with pytest.raises(EdgefusionError, match="vae differ"):
        generate(PROMPTS, sd_model, out=tmp_path / "tiny", steps=2, seed=5, progress=False)


def test_a_pipeline_folder_gives_its_vae(sd_model, tmp_path) -> None:
    plain = generate(PROMPTS[:1], sd_model, out=tmp_path / "a", steps=2, progress=False)
    swapped = generate(PROMPTS[:1], sd_model, out=tmp_path / "b", steps=2, vae=sd_model, progress=False)
    assert swapped[0]["vae"] == str(sd_model) and "vae" not in plain[0]
    assert np.array_equal(_pixels(tmp_path / "a")[0], _pixels(tmp_path / "b")[0])


def test_bad_decoders_are_clear_errors(sd_model, tiny_folder, tmp_path) -> None:
    with pytest.raises(EdgefusionError, match="not found"):
        load_decoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgefusionError, match="holds no decoder"):
        load_decoder(tmp_path / "empty")
    with pytest.raises(EdgefusionError, match="not a decoder"):
        load_decoder(sd_model / "unet")
    (tmp_path / "bare").mkdir()
    shutil.copy(tiny_folder / "config.json", tmp_path / "bare")
    with pytest.raises(EdgefusionError, match="holds no weights"):
        load_decoder(tmp_path / "bare")
    (tmp_path / "broken").mkdir()
    shutil.copy(tiny_folder / "config.json", tmp_path / "broken")
    (tmp_path / "broken" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(EdgefusionError, match="truncated or corrupt"):
        load_decoder(tmp_path / "broken")

    pipe = load_pipeline(sd_model)
    three = {"decoder_block_out_channels": (8,) * 3, "num_decoder_blocks": (1,) * 3}
    three_levels = _save_tiny(tmp_path / "f4", **three)
    with pytest.raises(EdgefusionError, match="upsamples latents 4x"):
        swap_decoder(pipe, load_decoder(three_levels))
    two_levels = {"decoder_block_out_channels": (8, 8), "num_decoder_blocks": (1, 1)}
    three_channels = _save_tiny(tmp_path / "c3", latent_channels=3, **two_levels)
    with pytest.raises(EdgefusionError, match="3 latent channels"):
        swap_decoder(pipe, load_decoder(three_channels))
    with pytest.raises(EdgefusionError, match="torch pipeline"):
        swap_decoder(SimpleNamespace(vae=pipe.vae), load_decoder(tiny_folder))
    # On the command line: one line, before the model loads, and nothing generated.
    result = _cli("generate", "a red circle", "--model", str(sd_model), "--out", str(tmp_path / "x"),
                  "--vae", str(tmp_path / "empty"))  # fmt: skip
    assert isinstance(result.exception, EdgefusionError) and not (tmp_path / "x").exists()


def test_export_vae_writes_the_tiny_decoder_and_reports_against_it(sd_model, tiny_folder, tmp_path) -> None:
    out = tmp_path / "onnx"
    args = ["export", str(sd_model), "--out", str(out), "--vae", str(tiny_folder)]
    result = _cli(*args, "--report", "--prompts", "2", "--steps", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["psnr_db"] >= 40  # onnxruntime against torch, both with the tiny decoder
    assert json.loads((out / "edgefusion_export.json").read_text())["vae"] == str(tiny_folder)

    tiny = AutoencoderTiny.from_pretrained(tiny_folder)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    graph = OrtSession(out / "vae_decoder" / "model.onnx", threads=1)
    with torch.no_grad():
        expected = tiny.decode(latents).sample
    assert torch.allclose(graph(latent_sample=latents), expected, atol=1e-4)


def test_compare_measures_a_decoder_against_the_full_one(sd_model, tiny_folder, toy_images) -> None:
    settings = ReportSettings(num_prompts=2, steps=2)
    itself = compare_decoders(sd_model, sd_model, settings, data=toy_images, num_latents=3)
    assert itself["latents"]["n"] == 3 and math.isinf(itself["latents"]["psnr_db"])
    assert math.isinf(itself["generate"]["psnr_db"]) and itself["generate"]["steps"] == 2
    assert itself["params"]["full_decoder"] == itself["params"]["tiny_decoder"]

    result = _cli("decoder", "compare", "--model", str(sd_model), "--vae", str(tiny_folder), "--data",
                  str(toy_images), "--latents", "3", "--num-prompts", "2", "--steps", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    assert measured["size"] == IMAGE_SIZE and 0 < measured["latents"]["psnr_db"] < 40
    assert 0 < measured["generate"]["psnr_db"] < 40
    assert measured["params"]["tiny_decoder"] < measured["params"]["full_decoder"]
    assert measured["seconds"]["full"] > 0 and measured["seconds"]["tiny"] > 0


class _TinyInception(torch.nn.Module):
    """The Inception contract of ``evaluate`` at micro size: images -> (features, logits)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=4, stride=4)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.conv(images).mean(dim=(2, 3))
        return pool, pool


def test_eval_and_toy_eval_generate_with_the_vae(sd_model, tiny_folder, tmp_path) -> None:
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    config = EvalConfig(
        prompts=tmp_path / "prompts.txt",
        out=tmp_path / "eval",
        model=str(sd_model),
        vae=str(tiny_folder),
        steps=2,
        seed=3,
        inception_weights=Path("unused"),  # the tiny network below stands in for it
        toy=False,
    )
    result = evaluate(config, inception=_TinyInception())
    assert result["settings"]["vae"] == str(tiny_folder)
    generate(PROMPTS, sd_model, out=tmp_path / "gen", steps=2, seed=3, vae=tiny_folder, progress=False)
    made, expected = _pixels(tmp_path / "eval" / "images"), _pixels(tmp_path / "gen")
    assert len(made) == 2 and all(np.array_equal(a, b) for a, b in zip(made, expected, strict=True))

    toy_prompts = [
        "a large orange cross at the right on a blue background",
        "a small orange triangle at the bottom on a white background",
    ]
    plain = evaluate_toy_model(sd_model, toy_prompts, steps=2, batch_size=2)
    swapped = evaluate_toy_model(sd_model, toy_prompts, steps=2, batch_size=2, vae=tiny_folder)
    assert swapped["settings"]["vae"] == str(tiny_folder) and "vae" not in plain["settings"]
    assert swapped["clip_score"] != plain["clip_score"]
