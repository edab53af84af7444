"""``edgefusion train`` on micro models: from a config file it trains a U-Net from random weights
into a pipeline plain diffusers runs, records its guidance, resumes exactly, and the loss is SD's."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from micro_models import IMAGE_SIZE
from safetensors.torch import load_file
from transformers import CLIPTextModel

from edgefusion.errors import EdgefusionError
from edgefusion.provenance import PROVENANCE_FILE
from edgefusion.train import data, denoise
from edgefusion.train.config import load_config
from edgefusion.train.denoise import CONFIG_NAME, DenoiseConfig, denoising_loss, snr_weights, train_unet


@pytest.fixture
def train_config(tmp_path: Path, teacher_pipeline: Path, toy_images: Path, micro):
    """``train_config(*overrides)``: a micro from-scratch run writing under ``tmp_path``."""
    unet_config = tmp_path / "unet.json"
    unet_config.write_text(json.dumps(micro.unet_config()))

    def make(*overrides: str) -> DenoiseConfig:
        base = [
            f"pipeline={teacher_pipeline}",
            f"unet_config={unet_config}",
            f"data.path={toy_images}",
            f"data.resolution={IMAGE_SIZE}",
            f"out={tmp_path / 'out'}",
            f"run_dir={tmp_path / 'run'}",
            "guidance_scale=3.0",
            "train.steps=4",
            "train.batch_size=2",
            "train.learning_rate=1e-3",
            "train.checkpoint_every=2",
            "train.ema_decay=0.9",
        ]
        return load_config(DenoiseConfig, None, [*base, *overrides])

    return make


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "losses.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _unet_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


def test_trains_from_random_weights_into_a_pipeline_with_its_guidance(train_config, tmp_path) -> None:
    config = train_config(f"data.cache={tmp_path / 'cache'}")
    report = train_unet(config)

    assert report.steps == 4 and report.resumed_from == 0
    pipe = StableDiffusionPipeline.from_pretrained(report.out, safety_checker=None)
    image = pipe("a red circle", num_inference_steps=2, height=16, width=16, output_type="np").images
    assert image.shape == (1, 16, 16, 3) and (0 <= image).all() and (image <= 1).all()
    provenance = json.loads((report.out / "unet" / PROVENANCE_FILE).read_text())
    assert provenance["guidance_scale"] == 3.0 and provenance["stage"] == "train"
    assert load_config(DenoiseConfig, report.out / CONFIG_NAME) == config
    ema = load_file(str(report.run_dir / "checkpoints" / "step-0000004" / "ema.safetensors"))
    assert all(torch.equal(ema[name], tensor) for name, tensor in _unet_weights(report.out).items())
    # The weights moved from the seeded random init.
    start = denoise.initial_unet(config).state_dict()
    assert any(not torch.equal(start[k], v) for k, v in _unet_weights(report.out).items())


@pytest.mark.parametrize("text_encoder", ["frozen", "trained"])
def test_a_killed_run_resumes_exactly(train_config, tmp_path, monkeypatch, text_encoder) -> None:
    settings = ("train.steps=5", "train.lr_warmup_steps=3", "min_snr_gamma=5")
    if text_encoder == "trained":
        settings = (*settings, "text_encoder_lr=1e-4")
    straight = train_unet(train_config(*settings, f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}"))

    calls = {"n": 0}
    real_loss = denoise.denoising_loss

    def killed_at_step_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # steps 1-3 logged, checkpoint at 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(denoise, "denoising_loss", killed_at_step_four)
    resumed_config = train_config(*settings, f"run_dir={tmp_path / 'b'}", f"out={tmp_path / 'b-out'}")
    with pytest.raises(KeyboardInterrupt):
        train_unet(resumed_config)
    monkeypatch.setattr(denoise, "denoising_loss", real_loss)
    resumed = train_unet(resumed_config)

    assert resumed.resumed_from == 2
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    a, b = _unet_weights(straight.out), _unet_weights(resumed.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fine_tuned_text_encoder_learns_from_cached_token_ids_and_ships(
    train_config, tmp_path, teacher_pipeline
) -> None:
    cache = tmp_path / "cache"
    frozen = train_unet(
        train_config(f"data.cache={cache}", f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}")
    )
    encoder_file = Path("text_encoder") / "model.safetensors"
    original = load_file(str(teacher_pipeline / encoder_file))
    assert (frozen.out / encoder_file).read_bytes() == (teacher_pipeline / encoder_file).read_bytes()

    # A cache written before caches held token ids gains them when its rows are the samples in order.
    ids_file = cache / data.CACHE_TOKEN_IDS
    built_ids = load_file(str(ids_file))["input_ids"]
    ids_file.unlink()
    config = train_config(f"data.cache={cache}", "text_encoder_lr=1e-2")
    report = train_unet(config)
    assert torch.equal(load_file(str(ids_file))["input_ids"], built_ids)

    tuned = load_file(str(report.out / encoder_file))
    assert tuned.keys() == original.keys() and all(t.dtype == torch.float32 for t in tuned.values())
    assert any(not torch.equal(original[k].float(), tuned[k]) for k in original)
    provenance = json.loads((report.out / "unet" / PROVENANCE_FILE).read_text())
    assert provenance["text_encoder_lr"] == 0.01
    pipe = StableDiffusionPipeline.from_pretrained(report.out, safety_checker=None)
    image = pipe("a red circle", num_inference_steps=2, height=16, width=16, output_type="np").images
    assert image.shape == (1, 16, 16, 3) and np.isfinite(image).all()


def test_another_frozen_text_encoder_conditions_from_cached_token_ids_and_ships(
    train_config, tmp_path, teacher_pipeline
) -> None:
    """A pipeline whose encoder was changed: the cache keeps the original's states, the run reads
    token ids through the other encoder, which stays frozen and is shipped as it was."""
    other = tmp_path / "other"
    shutil.copytree(teacher_pipeline, other)
    encoder = CLIPTextModel.from_pretrained(other / "text_encoder")
    with torch.no_grad():
        encoder.get_input_embeddings().weight.mul_(3.0)
    encoder.save_pretrained(other / "text_encoder")
    cache = tmp_path / "cache"
    train_unet(train_config(f"data.cache={cache}", f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}"))
    manifest = (cache / data.CACHE_MANIFEST).read_bytes()

    calls = []
    real_loss = denoise.denoising_loss

    def spy(model, scheduler, latents, cond, *args, **kwargs):
        calls.append(cond)
        return real_loss(model, scheduler, latents, cond, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(denoise, "denoising_loss", spy)
        report = train_unet(train_config(f"data.cache={cache}", f"text_encoder={other}"))

    assert (cache / data.CACHE_MANIFEST).read_bytes() == manifest  # the same cache, not rebuilt
    assert all(c.dtype == torch.int64 or c.dtype == torch.int32 for c in calls)  # token ids
    encoder_file = Path("text_encoder") / "model.safetensors"
    shipped, source = load_file(str(report.out / encoder_file)), load_file(str(other / encoder_file))
    assert shipped.keys() == source.keys() and all(torch.equal(shipped[k], source[k].float()) for k in source)
    provenance = json.loads((report.out / "unet" / PROVENANCE_FILE).read_text())
    assert provenance["text_encoder"] == str(other) and provenance["text_encoder_lr"] is None


def test_loss_targets_velocity_or_noise_as_the_schedule_says(micro) -> None:
    unet = micro.unet()
    latents = torch.randn(3, 4, 8, 8)
    text = torch.randn(3, 77, micro.text_width)
    for prediction_type in ("epsilon", "v_prediction"):
        scheduler = DDPMScheduler(prediction_type=prediction_type, rescale_betas_zero_snr=True)
        got = denoising_loss(unet, scheduler, latents, text, torch.Generator().manual_seed(1))
        # The same draws, by hand.
        gen = torch.Generator().manual_seed(1)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (3,), generator=gen)
        target = scheduler.get_velocity(latents, noise, t) if prediction_type == "v_prediction" else noise
        with torch.no_grad():
            pred = unet(scheduler.add_noise(latents, noise, t), t, text).sample
        assert torch.allclose(got["loss"], ((pred - target) ** 2).mean(), atol=1e-6)


def test_min_snr_weights_clip_the_signal_to_noise_ratio() -> None:
    t = torch.tensor([0, 500, 999])
    eps = DDPMScheduler(prediction_type="epsilon")
    snr = eps.alphas_cumprod[t] / (1 - eps.alphas_cumprod[t])
    assert torch.allclose(snr_weights(eps, t, 5.0), snr.clamp(max=5) / snr)
    v = DDPMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    weights = snr_weights(v, t, 5.0)
    assert weights[-1] == 0  # zero terminal SNR: the pure-noise step gets no weight
    assert weights[0] == pytest.approx(5.0 / (float(v.alphas_cumprod[0] / (1 - v.alphas_cumprod[0])) + 1))


def test_min_snr_clipping_the_prediction_keeps_the_noisy_steps() -> None:
    t = torch.arange(0, 1000, 37)
    v = DDPMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    snr = v.alphas_cumprod[t] / (1 - v.alphas_cumprod[t])
    weights = snr_weights(v, t, 5.0, clip="prediction")
    assert torch.equal(weights[snr <= 4], torch.ones_like(weights[snr <= 4]))  # pure noise included
    assert torch.allclose(weights[snr > 4], 5.0 / (snr[snr > 4] + 1))
    # For epsilon prediction the target's own loss is what x0 clipping already weights.
    eps = DDPMScheduler(prediction_type="epsilon")
    assert torch.allclose(snr_weights(eps, t, 5.0, clip="prediction"), snr_weights(eps, t, 5.0))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("unet=toy:teacher", "exactly one of unet"),
        ("guidance_scale=0.5", "guidance_scale"),
        ("min_snr_gamma=0", "min_snr_gamma"),
        ("min_snr_clip=v", "min_snr_clip"),
        ("text_encoder_lr=0", "text_encoder_lr"),
        ("caption_dropout=1.0", "caption_dropout"),
    ],
)
def test_bad_settings_name_the_fix(train_config, override, message) -> None:
    with pytest.raises(EdgefusionError, match=message):
        train_config(override)


def test_a_bad_unet_config_file_is_a_clear_error(train_config, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EdgefusionError, match="not valid JSON"):
        train_unet(train_config(f"unet_config={bad}"))
    with pytest.raises(EdgefusionError, match="could not read unet_config"):
        train_unet(train_config(f"unet_config={tmp_path / 'missing.json'}"))


def test_a_packed_leg_resumes_close_to_the_uninterrupted_run(train_config, tmp_path) -> None:
    from typer.testing import CliRunner

    from edgefusion.cli import _register_subcommands, app
    from edgefusion.train.checkpoint import PACKED_TENSORS

    _register_subcommands()
    settings = ("train.steps=6", "train.checkpoint_every=3", "train.learning_rate=1e-4")
    straight = train_unet(train_config(*settings, f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}"))
    leg_one = train_config(*settings, "train.steps=3", f"run_dir={tmp_path / 'b'}", f"out={tmp_path / 'b1'}")
    train_unet(leg_one)

    runner = CliRunner()
    packed, moved = tmp_path / "packed", tmp_path / "elsewhere"
    assert runner.invoke(app, ["checkpoint", "pack", str(tmp_path / "b"), str(packed)]).exit_code == 0
    checkpoint_bytes = sum(
        f.stat().st_size for f in (tmp_path / "b" / "checkpoints" / "step-0000003").iterdir()
    )
    packed_bytes = sum((packed / name).stat().st_size for name in PACKED_TENSORS)
    assert packed_bytes < 0.55 * checkpoint_bytes  # 16-bit, not 32
    assert runner.invoke(app, ["checkpoint", "unpack", str(packed), str(moved)]).exit_code == 0
    again = runner.invoke(app, ["checkpoint", "unpack", str(packed), str(moved)])
    assert again.exit_code != 0 and "already holds checkpoints" in str(again.exception)

    # A resumed leg takes its weights from the checkpoint: it may name another init of the same
    # architecture (here the finished run's output), as when leg one's init is not on this machine.
    resumed = (f"unet={straight.out}", "unet_config=null")
    leg_two = train_unet(train_config(*settings, *resumed, f"run_dir={moved}", f"out={tmp_path / 'b2'}"))
    assert leg_two.resumed_from == 3 and leg_two.steps == 6
    rows_a, rows_b = _rows(tmp_path / "a"), _rows(moved)
    assert [r["step"] for r in rows_b] == [str(s) for s in range(1, 7)]  # the log travelled too
    assert rows_b[:3] == rows_a[:3]
    for a, b in zip(rows_a[3:], rows_b[3:], strict=True):  # same batches and noise, rounded weights
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-2)
    a, b = _unet_weights(straight.out), _unet_weights(leg_two.out)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)
