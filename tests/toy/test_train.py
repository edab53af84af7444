"""Toy-model training on micro configs: each loss falls, resume is exact, the whole run assembles."""

import copy
import csv
import json

import torch

from edgefusion.toy.models import AttributeClassifier, ToyModelSizes, build_vae, clip_config
from edgefusion.toy.samples import scene_batch
from edgefusion.toy.tokenizer import load_toy_tokenizer
from edgefusion.toy.train import (
    ToyTrainConfig,
    classifier_loss,
    clip_loss,
    run_steps,
    train_toy_world,
    vae_loss,
)

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

    from edgefusion.toy.metrics import ToyEvaluator

    cfg = ToyTrainConfig(
        sizes=MICRO,
        classifier_steps=2,
        classifier_batch=8,
        clip_steps=2,
        clip_batch=8,
        vae_steps=2,
        vae_finetune_steps=2,
        vae_batch=4,
        teacher_samples=16,
        unet_steps=2,
        unet_batch=4,
        checkpoint_every=1,
        classifier_eval_samples=16,
        vae_eval_samples=16,
    )
    train_toy_world(cfg, tmp_path / "work", tmp_path / "out")
    teacher = tmp_path / "out" / "teacher"
    pipe = StableDiffusionPipeline.from_pretrained(str(teacher))  # no dtype: the parts agree
    image = pipe("a red circle on a blue background", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    evaluator = ToyEvaluator(tmp_path / "out" / "evaluator")
    assert evaluator.predict(torch.rand(2, 3, 32, 32))["layout"].shape == (2,)
    metrics = json.loads((tmp_path / "work" / "vae" / "metrics.json").read_text())
    assert metrics["scaling_factor"] > 0
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr
    # The teacher stage ran on the shared loop: its log, its EMA checkpoint, its recorded guidance.
    run = tmp_path / "work" / "teacher" / "run"
    assert [row["step"] for row in csv.DictReader((run / "losses.csv").open())] == ["1", "2"]
    assert (run / "checkpoints" / "step-0000002" / "ema.safetensors").is_file()
    assert (
        json.loads((teacher / "unet" / "edgefusion.json").read_text())["guidance_scale"] == cfg.guidance_scale
    )
