"""``edgefusion decoder distill`` on micro models: training lowers the distillation loss, a killed
run resumes exactly, and the output is a pipeline plain diffusers loads with an AutoencoderTiny
that the pipelines feed the U-Net's latents as they are."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, LatentConsistencyModelPipeline, StableDiffusionPipeline
from micro_models import IMAGE_SIZE
from safetensors.torch import load_file
from typer.testing import CliRunner

from edgefusion.decoder import distill
from edgefusion.decoder.distill import (
    CONFIG_NAME,
    decoder_loss,
    distill_decoder,
    load_decoder_config,
    tiny_decoder,
)
from edgefusion.errors import EdgefusionError
from edgefusion.generate import generate
from edgefusion.provenance import PROVENANCE_FILE
from edgefusion.train.data import encode_images, image_to_tensor, index_samples, read_image


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "losses.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _decoder_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))


def _latents(model: Path, images: Path) -> tuple[AutoencoderKL, torch.Tensor]:
    """The micro VAE and the U-Net-scale latents (posterior means) of the toy images."""
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
    refs, _ = index_samples(images)
    pixels = torch.stack([image_to_tensor(read_image(ref), IMAGE_SIZE) for ref in refs])
    return vae, encode_images(vae, pixels)[0]


def test_training_lowers_the_loss_and_writes_a_pipeline_diffusers_loads(
    decoder_config, sd_model, toy_images
) -> None:
    config = decoder_config("train.learning_rate=1e-2", "loss.gradient_weight=0.5")
    report = distill_decoder(config)

    assert report.steps == 4 and report.resumed_from == 0
    assert [row["step"] for row in _rows(report.run_dir)] == ["1", "2", "3", "4"]
    assert {"loss", "pixel", "gradient", "psnr"} <= set(_rows(report.run_dir)[0])
    # On the same latents, the trained decoder is closer to the full decoder than its seeded init.
    vae, latents = _latents(sd_model, toy_images)
    initial = tiny_decoder(vae.config, 8, None, config.train.seed)
    trained = AutoencoderTiny.from_pretrained(report.out, subfolder="vae")
    with torch.no_grad():
        before = decoder_loss(initial.decoder, vae, latents, config.loss)
        after = decoder_loss(trained.decoder, vae, latents, config.loss)
    assert after["pixel"] < before["pixel"] and after["psnr"] > before["psnr"]
    # Only the decoder trained: the encoder kept its seeded random weights.
    start = initial.encoder.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in trained.encoder.state_dict().items())

    index = json.loads((report.out / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderTiny"]
    provenance = json.loads((report.out / "vae" / PROVENANCE_FILE).read_text())
    assert provenance["stage"] == "decoder distill" and provenance["steps"] == 4
    assert load_decoder_config(report.out / CONFIG_NAME) == config
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):  # the rest is the model's, unchanged
        for file in (sd_model / part).iterdir():
            assert (report.out / part / file.name).read_bytes() == file.read_bytes()
    pipe = StableDiffusionPipeline.from_pretrained(report.out)  # no dtype, no edgefusion
    assert isinstance(pipe.vae, AutoencoderTiny) and pipe.vae_scale_factor == 2
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3) and (0 <= image).all() and (image <= 1).all()


def test_a_killed_run_resumes_exactly(decoder_config, tmp_path, monkeypatch) -> None:
    settings = ("train.steps=5", "train.lr_warmup_steps=2", "train.ema_decay=0.9", "loss.pixel=mse")
    straight_config = decoder_config(*settings, f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}")
    straight = distill_decoder(straight_config)

    calls = {"n": 0}
    real_loss = distill.decoder_loss

    def killed_at_step_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # steps 1-3 logged, checkpoint at 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(distill, "decoder_loss", killed_at_step_four)
    resumed_config = decoder_config(*settings, f"run_dir={tmp_path / 'b'}", f"out={tmp_path / 'b-out'}")
    with pytest.raises(KeyboardInterrupt):
        distill_decoder(resumed_config)
    assert not (tmp_path / "b-out").exists()
    monkeypatch.setattr(distill, "decoder_loss", real_loss)
    resumed = distill_decoder(resumed_config)

    assert resumed.resumed_from == 2
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    a, b = _decoder_weights(straight.out), _decoder_weights(resumed.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_lcm_keeps_its_pipeline_and_generates_with_the_tiny_decoder(
    lcm_model, toy_images, tmp_path
) -> None:
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    out = tmp_path / "lcm-tiny"
    args = ["decoder", "distill", "--model", str(lcm_model), "--out", str(out)]
    settings = [f"data.path={toy_images}", f"data.resolution={IMAGE_SIZE}", "channels=8"]
    result = CliRunner().invoke(app, [*args, *settings, f"run_dir={tmp_path / 'run'}", "train.steps=1"])
    assert result.exit_code == 0, result.output

    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "LatentConsistencyModelPipeline"
    pipe = LatentConsistencyModelPipeline.from_pretrained(out)
    assert isinstance(pipe.vae, AutoencoderTiny)
    records = generate("a red circle", out, out=tmp_path / "images", progress=False)
    assert records[0]["lcm"] and records[0]["steps"] == 2 and (tmp_path / "images" / "00000.png").is_file()


def test_the_pipeline_feeds_the_tiny_decoder_the_unets_latents_unscaled(sd_model, tiny_folder) -> None:
    """A diffusers pipeline decodes ``latents / vae.config.scaling_factor``; the tiny decoder's factor
    is 1, so it receives the latents the U-Net made, the scale it is distilled at."""
    tiny = AutoencoderTiny.from_pretrained(tiny_folder)
    pipe = StableDiffusionPipeline.from_pretrained(sd_model, vae=tiny, safety_checker=None)
    seen = []
    tiny.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    run = dict(prompt="a red circle", num_inference_steps=2)
    latents = pipe(**run, generator=torch.Generator().manual_seed(0), output_type="latent").images
    pipe(**run, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(seen[-1], latents)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=", "set model"),
        ("data.path=", "set data.path"),
        ("channels=0", "channels"),
        ("blocks=[]", "blocks"),
        ("loss.pixel=l2", "loss.pixel"),
        ("loss.gradient_weight=-1", "gradient_weight"),
    ],
)
def test_bad_settings_name_the_fix(decoder_config, override, message) -> None:
    with pytest.raises(EdgefusionError, match=message):
        decoder_config(override)


def test_blocks_must_match_the_vae_levels(decoder_config) -> None:
    with pytest.raises(EdgefusionError, match="VAE has 2"):
        distill_decoder(decoder_config("blocks=[1, 1, 1]"))


def test_unset_train_settings_take_the_decoder_defaults(tmp_path) -> None:
    file = tmp_path / "decoder.yaml"
    file.write_text("model: toy:edgefusion\ndata:\n  path: data\ntrain:\n  steps: 7\n")
    config = load_decoder_config(file)
    assert config.train.steps == 7
    assert config.train.learning_rate == distill.TRAIN_DEFAULTS["learning_rate"]
    assert config.train.ema_decay is None
    assert load_decoder_config(file, ["train.learning_rate=3e-4"]).train.learning_rate == 3e-4


def test_init_starts_the_student_from_a_trained_tiny_decoder(decoder_config, tiny_folder) -> None:
    settings = (f"init={tiny_folder}", "blocks=[1, 1]", "train.steps=1", "train.learning_rate=1e-12")
    report = distill_decoder(decoder_config(*settings))
    start = AutoencoderTiny.from_pretrained(tiny_folder).decoder.state_dict()
    trained = AutoencoderTiny.from_pretrained(report.out, subfolder="vae").decoder.state_dict()
    assert trained.keys() == start.keys()
    assert all(torch.allclose(v, start[k], atol=1e-8) for k, v in trained.items())
    provenance = json.loads((report.out / "vae" / PROVENANCE_FILE).read_text())
    assert provenance["init"] == str(tiny_folder)


def test_init_of_another_layout_is_refused(decoder_config, tiny_folder) -> None:
    with pytest.raises(EdgefusionError, match="another layout than the student"):
        distill_decoder(decoder_config(f"init={tiny_folder}"))  # TAESD's 3 blocks, not 1


def test_generated_latents_replace_the_first_share_of_each_batch(
    decoder_config, tmp_path, monkeypatch
) -> None:
    seen = []
    real_loss = distill.decoder_loss

    def spy(decoder, vae, latents, loss):
        seen.append(latents.clone())
        return real_loss(decoder, vae, latents, loss)

    monkeypatch.setattr(distill, "decoder_loss", spy)
    distill_decoder(decoder_config("train.steps=1", f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}"))
    generated = ("generated.fraction=0.5", "generated.steps=2", "train.steps=1")
    report = distill_decoder(
        decoder_config(*generated, f"run_dir={tmp_path / 'b'}", f"out={tmp_path / 'b-out'}")
    )

    data_only, mixed = seen
    assert mixed.shape == data_only.shape and torch.isfinite(mixed).all()
    assert torch.equal(mixed[2:], data_only[2:])  # the data's latents, drawn first with the same generator
    assert not torch.allclose(mixed[:2], data_only[:2])  # the pipeline's own samples
    provenance = json.loads((report.out / "vae" / PROVENANCE_FILE).read_text())
    assert provenance["generated"] == {"fraction": 0.5, "steps": 2, "guidance": 7.5}  # SD's CFG default


def test_generated_fraction_must_be_a_share(decoder_config) -> None:
    with pytest.raises(EdgefusionError, match="generated.fraction"):
        decoder_config("generated.fraction=1.5")
