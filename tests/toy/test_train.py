"""Toy-model training on micro configs: each loss falls, resume is exact, the whole run assembles."""

import copy
import csv
import json
import time

import pytest
import torch

from edgefusion.errors import EdgefusionError
from edgefusion.toy.models import AttributeClassifier, ToyModelSizes, build_unet, build_vae, clip_config
from edgefusion.toy.samples import scene_batch
from edgefusion.toy.tokenizer import load_toy_tokenizer
from edgefusion.toy.train import (
    ToyTrainConfig,
    classifier_loss,
    clip_loss,
    denoising_loss,
    retrain_teacher,
    run_steps,
    sd_noise_scheduler,
    train_teacher,
    train_toy_world,
    vae_loss,
)
from edgefusion.train.checkpoint import latest_checkpoint

MICRO = ToyModelSizes(
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    vision_hidden=32,
    vision_layers=1,
    vision_patch=16,
    projection_dim=16,
    vae_widths=(8, 16, 16),
    vae_norm_groups=4,
    unet_widths=(16, 16, 32, 32),
    unet_head_dim=4,
    unet_norm_groups=8,
    image_size=32,
)


def _loss_falls(params, compute, steps=8, lr=3e-3):
    opt = torch.optim.Adam(params, lr=lr)
    first = compute().item()
    for _ in range(steps):
        opt.zero_grad()
        compute().backward()
        opt.step()
    return compute().item() < first


def test_classifier_loss_falls():
    torch.manual_seed(0)
    model = AttributeClassifier(width=16, feature_dim=32, image_size=32)
    batch = scene_batch(0, 0, 16, 32, allow_held_out=True)
    assert _loss_falls(model.parameters(), lambda: classifier_loss(model, batch.images, batch.scenes))


def test_clip_loss_falls():
    from transformers import CLIPModel

    torch.manual_seed(0)
    tok = load_toy_tokenizer()
    model = CLIPModel(clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, MICRO))
    batch = scene_batch(0, 0, 8, 32)
    assert _loss_falls(model.parameters(), lambda: clip_loss(model, tok, batch.captions, batch.images))


def test_vae_loss_falls():
    torch.manual_seed(0)
    vae = build_vae(MICRO)
    images = scene_batch(0, 0, 8, 32).images
    assert _loss_falls(
        vae.parameters(), lambda: vae_loss(vae, images, torch.Generator().manual_seed(0), 1e-6)["loss"]
    )


@pytest.mark.parametrize("zero_terminal_snr", [False, True])
def test_teacher_loss_falls(zero_terminal_snr):
    torch.manual_seed(0)
    unet = build_unet(MICRO, latent_size=8)
    sched = sd_noise_scheduler(zero_terminal_snr)
    x0, cond, uncond = torch.randn(8, 4, 8, 8), torch.randn(8, 77, 32), torch.zeros(1, 77, 32)

    def compute():
        return denoising_loss(unet, sched, x0, cond, uncond, torch.Generator().manual_seed(0), 0.1, 5.0)[
            "loss"
        ]

    assert _loss_falls(unet.parameters(), compute, lr=1e-3)


def _run_classifier(run_dir, steps, model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_fn(step):
        batch = scene_batch(3, step * 8, 8, 32, allow_held_out=True)
        return {"loss": classifier_loss(model, batch.images, batch.scenes)}

    run_steps(
        run_dir, {"model": model}, opt, steps, loss_fn, checkpoint_every=2, lr_lambda=lambda s: 1.0 / (1 + s)
    )


def _losses(run_dir):
    with (run_dir / "losses.csv").open() as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def test_resume_continues_the_run_exactly(tmp_path):
    torch.manual_seed(0)
    init = AttributeClassifier(width=16, feature_dim=32, image_size=32)
    straight = copy.deepcopy(init)
    _run_classifier(tmp_path / "straight", 6, straight)
    resumed = copy.deepcopy(init)
    _run_classifier(tmp_path / "resumed", 4, resumed)
    # A kill after step 4 leaves a checkpoint at 4; a fresh process resumes from it.
    fresh = copy.deepcopy(init)
    _run_classifier(tmp_path / "resumed", 6, fresh)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "resumed")
    for a, b in zip(straight.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_micro_toy_world_trains_and_assembles(tmp_path):
    from diffusers import StableDiffusionPipeline

    from edgefusion.eval.toy import ToyEvaluator

    cfg = ToyTrainConfig(
        sizes=MICRO,
        classifier_steps=2,
        classifier_batch=8,
        clip_steps=2,
        clip_batch=8,
        vae_steps=2,
        vae_finetune_steps=2,
        vae_batch=4,
        cache_samples=16,
        unet_steps=2,
        zero_snr_steps=2,
        unet_batch=4,
        checkpoint_every=1,
        classifier_eval_samples=16,
        vae_eval_samples=16,
    )
    train_toy_world(cfg, tmp_path / "work", tmp_path / "out")
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "out" / "teacher"), dtype=torch.float32)
    image = pipe("a red circle on a blue background", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    evaluator = ToyEvaluator(tmp_path / "out" / "evaluator")
    assert evaluator.predict(torch.rand(2, 3, 32, 32))["layout"].shape == (2,)
    metrics = json.loads((tmp_path / "work" / "vae" / "metrics.json").read_text())
    assert metrics["scaling_factor"] > 0
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr

    # Retraining only the teacher (the GPU path, here on the CPU with a render worker) keeps the
    # encoders byte for byte, so latent caches and evaluators made with them stay valid.
    teacher = tmp_path / "out" / "teacher"
    cfg.unet_steps, cfg.zero_snr_steps = 1, 3
    retrain_teacher(cfg, tmp_path / "work2", tmp_path / "out2", teacher, workers=1)
    again = tmp_path / "out2" / "teacher"
    for part in ("tokenizer", "text_encoder", "vae", "scheduler"):
        for file in (teacher / part).rglob("*"):
            if file.is_file():
                assert (again / file.relative_to(teacher)).read_bytes() == file.read_bytes()
    steps = json.loads((tmp_path / "work2" / "teacher" / "steps.json").read_text())
    assert steps == {"unet_steps": 1, "zero_snr_steps": 3}
    pipe = StableDiffusionPipeline.from_pretrained(str(again), dtype=torch.float32)
    assert pipe("a red circle", num_inference_steps=1, output_type="np").images[0].shape == (32, 32, 3)


def test_run_steps_stops_at_its_deadline_with_a_checkpoint(tmp_path):
    model = AttributeClassifier(width=8, feature_dim=16, image_size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_fn(step):
        batch = scene_batch(3, step * 4, 4, 32, allow_held_out=True)
        return {"loss": classifier_loss(model, batch.images, batch.scenes)}

    done = run_steps(tmp_path, {"model": model}, opt, 50, loss_fn, checkpoint_every=10, deadline=time.time())
    assert done == 1
    assert len(_losses(tmp_path)) == 1
    assert latest_checkpoint(tmp_path).name == "step-0000001"


def test_a_teacher_cut_before_its_zero_snr_phase_is_refused(tmp_path):
    # Out of time, both phases stop after one step; one v-prediction step cannot turn an epsilon
    # U-Net into one its scheduler can sample, so no teacher is returned.
    cache = {
        "latents": torch.randn(8, 4, 8, 8),
        "text_embeds": torch.randn(8, 77, 32).half(),
        "uncond_embeds": torch.zeros(1, 77, 32).half(),
    }
    cfg = ToyTrainConfig(sizes=MICRO, unet_steps=200, zero_snr_steps=200, unet_batch=2, checkpoint_every=100)
    with pytest.raises(EdgefusionError, match="zero-terminal-SNR phase got 1 steps"):
        train_teacher(cfg, tmp_path, cache, deadline=time.time())
    assert json.loads((tmp_path / "steps.json").read_text()) == {"unet_steps": 1, "zero_snr_steps": 1}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "cuda"], "apply to --encoders runs only"),
        (["--max-minutes", "1"], "apply to --encoders runs only"),
        (["--encoders", "toy:teacher", "--device", "cuda"], "CUDA is not available"),
    ],
)
def test_toy_train_refuses_options_it_cannot_honour(tmp_path, extra, message):
    from typer.testing import CliRunner

    from edgefusion.toy.cli import toy_app

    if "cuda" in extra and "--encoders" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = ["train", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), *extra]
    result = CliRunner().invoke(toy_app, args)
    assert isinstance(result.exception, EdgefusionError)
    assert message in str(result.exception)
    assert not (tmp_path / "w").exists()
