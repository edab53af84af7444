"""Training of the toy world's models from scratch, on the CPU: ``edgefusion toy train``.

Order matters, because each model bounds the next:

1. the attribute classifier on renders (the ruler of every toy metric);
2. the toy CLIP, contrastively: its text tower is the pipeline's text encoder (a frozen, untrained
   encoder leaves the U-Net blind to colour words), its image tower the toy CLIP-score evaluator;
3. the f=4 VAE, checked with the classifier on its reconstructions (they cap everything after);
4. the teacher U-Net, by ``edgefusion train`` (the shared training stage) on a toy dataset written
   to disk, with the encoders of stages 2-3 frozen: v-prediction on SD's scaled-linear schedule
   rescaled to zero terminal SNR, 10% caption dropout for classifier-free guidance, EMA.

Every stage runs in ``work_dir/<stage>``, checkpoints as it goes and resumes where it stopped;
sample ``i`` of a stage's data stream is fixed by the seed, so a resumed run sees the same data.
The models of stages 1-3 are small enough for the plain loop here (:func:`run_steps`); the teacher
trains on the same loop, EMA, schedule, logs and checkpoints as every other diffusion stage.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from edgefusion.atomic import atomic_output_dir
from edgefusion.toy.attributes import IGNORE, batch_labels, score_predictions
from edgefusion.toy.dataset import write_toy_dataset
from edgefusion.toy.models import (
    AttributeClassifier,
    ToyModelSizes,
    build_unet,
    build_vae,
    clip_config,
)
from edgefusion.toy.samples import scene_batch
from edgefusion.toy.tokenizer import load_toy_tokenizer
from edgefusion.train.checkpoint import load_checkpoint, save_checkpoint
from edgefusion.train.config import DataConfig, LoopConfig
from edgefusion.train.denoise import DenoiseConfig, train_unet

# Stream seeds: one per stage, so no stage trains on another's samples by accident.
_CLASSIFIER_STREAM, _CLASSIFIER_TEST_STREAM, _CLIP_STREAM, _VAE_STREAM, _TEACHER_STREAM = 11, 12, 13, 14, 15


@dataclass
class ToyTrainConfig:
    """Steps and sizes of ``edgefusion toy train``; the defaults made the shipped classifier, toy
    CLIP and VAE. The teacher's fields become a ``DenoiseConfig`` (see :func:`train_teacher`); the
    shipped teacher's own config is ``configs/toy/teacher.yaml``."""

    seed: int = 0
    sizes: ToyModelSizes = field(default_factory=ToyModelSizes)
    classifier_steps: int = 1200
    classifier_batch: int = 64
    classifier_lr: float = 1e-3
    clip_steps: int = 1500
    clip_batch: int = 128
    clip_lr: float = 5e-4
    vae_steps: int = 600
    vae_batch: int = 32
    vae_lr: float = 5e-4
    vae_kl_weight: float = 1e-6
    vae_finetune_steps: int = 700
    vae_finetune_lr: float = 3e-4
    vae_object_weight: float = 10.0
    teacher_samples: int = 100_000
    unet_steps: int = 7500
    unet_batch: int = 32
    unet_lr: float = 3e-4
    unet_warmup: int = 500
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    guidance_scale: float = 2.0
    checkpoint_every: int = 250
    classifier_eval_samples: int = 2000
    vae_eval_samples: int = 500


def _log_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log rows past the checkpoint a run resumes from: they will be logged again."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r["step"]) <= last_step]
    if len(kept) != len(rows):
        path.unlink()
        for r in kept:
            _log_row(path, r)


def warmup_cosine(total: int, warmup: int = 0) -> Callable[[int], float]:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    return lambda step: min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * step / total))


def run_steps(
    run_dir: Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    steps: int,
    loss_fn: Callable[[int], dict[str, torch.Tensor]],
    checkpoint_every: int,
    lr_lambda: Callable[[int], float] = lambda s: 1.0,
    desc: str = "train",
) -> int:
    """The loop of the evaluator and encoder stages: resume, step, clip gradients, log, checkpoint.

    ``loss_fn(step)`` must draw its batch and noise from ``step`` alone, which is what makes a
    resumed run identical to an uninterrupted one. ``modules['model']`` is the trained module.
    Returns the number of steps done.
    """
    base_lrs = [g["lr"] for g in optimizer.param_groups]  # before the checkpoint overwrites them
    start = load_checkpoint(run_dir, modules, optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "losses.csv"
    _truncate_log(log_path, start)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, mininterval=10)
    t0 = time.time()
    done = start
    for step in bar:
        for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = lr * lr_lambda(step)
        losses = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        row = {"step": step + 1, **{k: v.item() for k, v in losses.items()}, "grad_norm": float(grad_norm)}
        row["seconds"] = round(time.time() - t0, 2)
        _log_row(log_path, row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        done = step + 1
        if done % checkpoint_every == 0 or done == steps:
            save_checkpoint(run_dir, done, modules, optimizer)
    return done


def _train_one(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    loss_fn: Callable[[int], dict[str, torch.Tensor]],
    cfg: ToyTrainConfig,
    warmup: int,
    desc: str,
) -> int:
    """:func:`run_steps` for one model, with the schedule every toy stage uses: a linear warm-up
    over ``warmup`` steps, then a cosine to 0 at ``steps``."""
    schedule = warmup_cosine(steps, warmup)
    return run_steps(
        run_dir, {"model": model}, optimizer, steps, loss_fn, cfg.checkpoint_every, schedule, desc
    )


def augment_like_decoder(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise and colour shifts, so the classifier reads VAE-decoded images as well as renders."""
    b = x.shape[0]
    blur = torch.rand(b, 1, 1, 1, generator=gen) < 0.5
    smoothed = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(blur, smoothed, x)
    x = x + 0.04 * torch.randn(b, 3, 1, 1, generator=gen)
    x = x + 0.03 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def classifier_loss(model: AttributeClassifier, images: torch.Tensor, scenes) -> torch.Tensor:
    """Sum of the heads' cross-entropies; heads that do not apply to a scene are ignored."""
    logits = model(images)
    labels = batch_labels(scenes)
    return sum(F.cross_entropy(logits[h], labels[h], ignore_index=IGNORE) for h in logits)


@torch.no_grad()
def classifier_accuracy(model: AttributeClassifier, images: torch.Tensor, scenes) -> float:
    """All-attribute accuracy of the classifier against the exact records."""
    model.eval()
    preds = {h: v.argmax(-1) for h, v in model(images).items()}
    rows = score_predictions(scenes, preds)
    return sum(all(r.values()) for r in rows) / len(rows)


def train_classifier(cfg: ToyTrainConfig, stage_dir: Path) -> AttributeClassifier:
    """Stage 1: the attribute classifier, on renders of every combination (it is the ruler)."""
    torch.manual_seed(cfg.seed)
    model = AttributeClassifier(image_size=cfg.sizes.image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.classifier_lr, weight_decay=1e-4)
    size, bsz = cfg.sizes.image_size, cfg.classifier_batch

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        model.train()
        batch = scene_batch(_CLASSIFIER_STREAM + cfg.seed, step * bsz, bsz, size, allow_held_out=True)
        gen = torch.Generator().manual_seed(step)
        return {"loss": classifier_loss(model, augment_like_decoder(batch.images, gen), batch.scenes)}

    _train_one(stage_dir / "run", model, opt, cfg.classifier_steps, loss_fn, cfg, warmup=0, desc="classifier")
    test = scene_batch(
        _CLASSIFIER_TEST_STREAM + cfg.seed, 0, cfg.classifier_eval_samples, size, allow_held_out=True
    )
    acc = classifier_accuracy(model, test.images, test.scenes)
    _write_json(
        stage_dir / "metrics.json", {"heldout_render_accuracy_all": acc, "n": cfg.classifier_eval_samples}
    )
    return model.eval()


def clip_loss(model, tokenizer, captions: list[str], images: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over the batch (captions padded to the longest: the text tower
    is causal, so padding does not change the states up to the end-of-text token)."""
    ids = tokenizer(captions, padding="longest", return_tensors="pt")
    out = model(
        input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=images, return_loss=True
    )
    return out.loss


def train_clip(cfg: ToyTrainConfig, stage_dir: Path):
    """Stage 2: the toy CLIP (transformers ``CLIPModel``), symmetric contrastive loss."""
    from transformers import CLIPModel

    tok = load_toy_tokenizer()
    torch.manual_seed(cfg.seed)
    config = clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, cfg.sizes)
    model = CLIPModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.1)
    bsz = cfg.clip_batch

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        model.train()
        batch = scene_batch(_CLIP_STREAM + cfg.seed, step * bsz, bsz, cfg.sizes.image_size)
        return {"loss": clip_loss(model, tok, batch.captions, batch.images)}

    _train_one(stage_dir / "run", model, opt, cfg.clip_steps, loss_fn, cfg, warmup=100, desc="clip")
    return model.eval()


def object_mask(images: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """1 where a pixel differs from its image's background (the median of the border), else 0.

    Shapes cover a few percent of a toy image, so a plain pixel loss is almost all background:
    an autoencoder trained on it alone returns shapes with the wrong colours.
    """
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]
    return ((images - background).abs().amax(dim=1, keepdim=True) > threshold).float()


def vae_loss(
    vae, images: torch.Tensor, gen: torch.Generator, kl_weight: float, object_weight: float = 0.0
) -> dict[str, torch.Tensor]:
    """Reconstruction (MSE + L1) of a reparameterized sample, plus a small KL to keep latents tame.

    ``object_weight`` > 0 up-weights the pixels of the shapes (:func:`object_mask`).
    """
    with torch.autocast("cpu", dtype=torch.bfloat16):
        posterior = vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample.float()
    weight = 1.0 + object_weight * object_mask(images)
    err = recon - images
    mse = (weight * err.square()).mean() / weight.mean()
    l1 = (weight * err.abs()).mean() / weight.mean()
    kl = posterior.kl().mean() / images[0].numel()
    return {"loss": mse + l1 + kl_weight * kl, "mse": mse, "l1": l1, "kl": kl}


def train_vae(cfg: ToyTrainConfig, stage_dir: Path, classifier: AttributeClassifier):
    """Stage 3: the f=4 ``AutoencoderKL`` (L1 + MSE + a tiny KL), under bf16 autocast: for this
    model the faster choice on CPU (unlike the teacher U-Net, which trains in float32)."""
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.sizes)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    bsz = cfg.vae_batch

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        vae.train()
        images = scene_batch(_VAE_STREAM + cfg.seed, step * bsz, bsz, cfg.sizes.image_size).images
        return vae_loss(vae, images, torch.Generator().manual_seed(step), cfg.vae_kl_weight)

    _train_one(stage_dir / "run", vae, opt, cfg.vae_steps, loss_fn, cfg, warmup=100, desc="vae")
    # Phase 2: fine-tune with the shapes' pixels up-weighted (as SD fine-tuned its VAE in a second
    # phase), on the next samples of the stream.
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_finetune_lr, weight_decay=0.0)

    def finetune_loss_fn(step: int) -> dict[str, torch.Tensor]:
        vae.train()
        start = (cfg.vae_steps + step) * bsz
        images = scene_batch(_VAE_STREAM + cfg.seed, start, bsz, cfg.sizes.image_size).images
        gen = torch.Generator().manual_seed(cfg.vae_steps + step)
        return vae_loss(vae, images, gen, cfg.vae_kl_weight, cfg.vae_object_weight)

    steps = cfg.vae_finetune_steps
    _train_one(stage_dir / "finetune", vae, opt, steps, finetune_loss_fn, cfg, warmup=50, desc="vae-finetune")
    vae.eval()
    # SD scales latents to unit variance; measure the factor on fresh samples.
    test = scene_batch(
        _CLASSIFIER_TEST_STREAM + cfg.seed, 0, cfg.vae_eval_samples, cfg.sizes.image_size, allow_held_out=True
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        latents = torch.cat([vae.encode(c).latent_dist.mean for c in test.images.split(100)])
        recon = torch.cat([vae.decode(z).sample for z in latents.split(100)]).float()
    latents = latents.float()
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    metrics = {
        "recon_mse": float(F.mse_loss(recon, test.images)),
        "classifier_accuracy_all_on_reconstructions": classifier_accuracy(classifier, recon, test.scenes),
        "classifier_accuracy_all_on_renders": classifier_accuracy(classifier, test.images, test.scenes),
        "scaling_factor": vae.config.scaling_factor,
    }
    _write_json(stage_dir / "metrics.json", metrics)
    return vae


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def assemble_pipeline(tokenizer, text_encoder, vae, unet):
    """The toy models as a standard ``StableDiffusionPipeline``: SD-v1's scaled-linear schedule
    rescaled to zero terminal SNR with v-prediction (Lin et al., 2024: SD's schedule leaves 6.8%
    of the image in x_T, and on 16x16 toy latents the background colour is readable from that
    remnant, so a model trained on it takes the colour from the noise instead of the caption),
    sampled by DDIM on trailing timesteps."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def teacher_config(cfg: ToyTrainConfig, stage_dir: Path, encoders: Path, data: Path) -> DenoiseConfig:
    """The ``edgefusion train`` config of the teacher stage: ``cfg``'s teacher fields, the U-Net
    of ``cfg.sizes`` from random weights, the frozen encoders of the pipeline folder ``encoders``."""
    latent_size = cfg.sizes.image_size // 2 ** (len(cfg.sizes.vae_widths) - 1)
    unet_dir = stage_dir / "unet"
    build_unet(cfg.sizes, latent_size).save_config(unet_dir)
    return DenoiseConfig(
        pipeline=str(encoders),
        unet_config=str(unet_dir / "config.json"),
        out=str(stage_dir / "out"),
        run_dir=str(stage_dir / "run"),
        overwrite=True,
        caption_dropout=cfg.caption_dropout,
        guidance_scale=cfg.guidance_scale,
        save_dtype="float16",
        # Posterior means: the toy VAE's posterior std is a fifth of the latents' spread, noise
        # the U-Net cannot predict (the teacher's results page measures what sampling it costs).
        data=DataConfig(
            path=str(data),
            cache=str(stage_dir / "cache"),
            resolution=cfg.sizes.image_size,
            sample_posterior=False,
        ),
        train=LoopConfig(
            steps=cfg.unet_steps,
            batch_size=cfg.unet_batch,
            learning_rate=cfg.unet_lr,
            lr_warmup_steps=cfg.unet_warmup,
            ema_decay=cfg.ema_decay,
            checkpoint_every=cfg.checkpoint_every,
            seed=cfg.seed,
        ),
    )


def train_teacher(cfg: ToyTrainConfig, stage_dir: Path, encoders: Path) -> Path:
    """Stage 4: the teacher U-Net, by the shared ``edgefusion train`` stage on ``cfg.teacher_samples``
    clean toy samples written to ``stage_dir/data``; returns the pipeline folder it wrote."""
    data = stage_dir / "data"
    if not data.exists():
        seed = _TEACHER_STREAM + cfg.seed
        write_toy_dataset(data, "clean", cfg.teacher_samples, seed, cfg.sizes.image_size, progress=False)
    return train_unet(teacher_config(cfg, stage_dir, encoders, data)).out


def text_encoder_from_clip(clip):
    """The text tower of the toy CLIP as the ``CLIPTextModel`` a SD pipeline holds."""
    from transformers import CLIPTextModel

    encoder = CLIPTextModel(clip.config.text_config)
    encoder.load_state_dict(clip.text_model.state_dict())
    return encoder.eval()


def save_evaluator(classifier: AttributeClassifier, clip, out: Path) -> None:
    """The toy evaluator folder: ``classifier.safetensors`` + its config, and ``clip/`` (fp16)."""
    with atomic_output_dir(out, overwrite=True) as tmp:
        state = {k: v.half().contiguous() for k, v in classifier.state_dict().items()}
        save_file(state, str(tmp / "classifier.safetensors"))
        (tmp / "classifier_config.json").write_text(json.dumps(classifier.config, indent=2))
        copy.deepcopy(clip).half().save_pretrained(str(tmp / "clip"))


def train_toy_world(cfg: ToyTrainConfig, work_dir: Path, out_dir: Path) -> dict:
    """Run all stages (resuming finished ones) and write ``out_dir/{teacher,evaluator}``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    _write_json(work_dir / "config.json", asdict(cfg))
    t_start = time.time()
    timings = {}

    def stage(name: str, fn, *args):
        t = time.time()
        (work_dir / name).mkdir(exist_ok=True)
        result = fn(cfg, work_dir / name, *args)
        timings[name] = round(time.time() - t, 1)
        return result

    classifier = stage("classifier", train_classifier)
    clip = stage("clip", train_clip)
    vae = stage("vae", train_vae, classifier)
    # The frozen encoders as a pipeline folder (its random U-Net is replaced by the teacher's).
    # The text encoder stays float32: transformers loads weights in their stored dtype, and an fp16
    # encoder in an otherwise fp32 pipeline fails in plain diffusers.
    encoders = work_dir / "encoders"
    latent_size = cfg.sizes.image_size // 2 ** (len(cfg.sizes.vae_widths) - 1)
    pipe = assemble_pipeline(
        load_toy_tokenizer(), text_encoder_from_clip(clip), vae.half(), build_unet(cfg.sizes, latent_size)
    )
    with atomic_output_dir(encoders, overwrite=True) as tmp:
        pipe.save_pretrained(str(tmp))
    teacher = stage("teacher", train_teacher, encoders)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output_dir(out_dir / "teacher", overwrite=True) as tmp:
        shutil.copytree(teacher, tmp, dirs_exist_ok=True)
    save_evaluator(classifier, clip, out_dir / "evaluator")
    timings["total"] = round(time.time() - t_start, 1)
    _write_json(work_dir / "timings.json", timings)
    return timings
