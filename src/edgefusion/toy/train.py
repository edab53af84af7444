"""Training of the toy world's models from scratch, on the CPU: ``edgefusion toy train``.

Order matters, because each model bounds the next:

1. the attribute classifier on renders (the ruler of every toy metric);
2. the toy CLIP, contrastively: its text tower is the pipeline's text encoder (a frozen, untrained
   encoder leaves the U-Net blind to colour words), its image tower the toy CLIP-score evaluator;
3. the f=4 VAE, checked with the classifier on its reconstructions (they cap everything after);
4. a cache of VAE latents and text embeddings (the encoders are frozen from here on);
5. the teacher U-Net: epsilon prediction on SD's scaled-linear DDPM schedule, Min-SNR loss
   weighting (faster convergence), 10% caption dropout for classifier-free guidance, EMA.

Every stage runs in ``work_dir/<stage>``, checkpoints as it goes and resumes where it stopped;
sample ``i`` of a stage's data stream is fixed by the seed, so a resumed run sees the same data.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from edgefusion.atomic import atomic_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.toy.attributes import IGNORE, batch_labels, score_predictions
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
from edgefusion.train.data import encode_text

# Stream seeds: one per stage, so no stage trains on another's samples by accident.
_CLASSIFIER_STREAM, _CLASSIFIER_TEST_STREAM, _CLIP_STREAM, _VAE_STREAM, _CACHE_STREAM = 11, 12, 13, 14, 15
_CPU = torch.device("cpu")


@dataclass
class ToyTrainConfig:
    """Steps and sizes of ``edgefusion toy train``; the defaults made the shipped weights."""

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
    cache_samples: int = 20_000
    unet_steps: int = 3000
    unet_batch: int = 32
    unet_lr: float = 3e-4
    unet_warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    zero_snr_steps: int = 4500
    zero_snr_lr: float = 1e-4
    checkpoint_every: int = 250
    classifier_eval_samples: int = 2000
    vae_eval_samples: int = 500

    @classmethod
    def from_dict(cls, d: dict) -> ToyTrainConfig:
        d = dict(d)
        sizes = d.pop("sizes", {})
        sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()}
        return cls(sizes=ToyModelSizes(**sizes), **d)


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
    return lambda step: _warmup_constant(step, warmup) * 0.5 * (1 + math.cos(math.pi * step / total))


def _warmup_constant(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / max(1, warmup))


def run_steps(
    run_dir: Path,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    steps: int,
    loss_fn: Callable[[int], dict[str, torch.Tensor]],
    checkpoint_every: int,
    lr_lambda: Callable[[int], float] = lambda s: 1.0,
    ema: nn.Module | None = None,
    ema_decay: float = 0.999,
    desc: str = "train",
    deadline: float | None = None,
) -> int:
    """The shared loop: resume, step, clip gradients, update EMA, log losses, checkpoint.

    ``loss_fn(step)`` must draw its batch and noise from ``step`` alone, which is what makes a
    resumed run identical to an uninterrupted one. ``modules['model']`` is the trained module;
    an EMA copy, when given, is checkpointed beside it. At ``deadline`` (a ``time.time()``
    value) the loop checkpoints and stops early, so a run on a lent machine ends on time with
    its work saved. Returns the number of steps done.
    """
    saved = dict(modules, **({"ema": ema} if ema is not None else {}))
    base_lrs = [g["lr"] for g in optimizer.param_groups]  # before the checkpoint overwrites them
    start = load_checkpoint(run_dir, saved, optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "losses.csv"
    _truncate_log(log_path, start)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, mininterval=10)
    t0 = time.time()
    model_params = list(modules["model"].parameters())
    ema_params = list(ema.parameters()) if ema is not None else []
    done = start
    for step in bar:
        for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = lr * lr_lambda(step)
        losses = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema is not None:
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, model_params, 1 - decay)
        row = {"step": step + 1, **{k: v.item() for k, v in losses.items()}, "grad_norm": float(grad_norm)}
        row["seconds"] = round(time.time() - t0, 2)
        _log_row(log_path, row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        done = step + 1
        out_of_time = deadline is not None and time.time() >= deadline
        if done % checkpoint_every == 0 or done == steps or out_of_time:
            save_checkpoint(run_dir, done, saved, optimizer)
        if out_of_time:
            break
    return done


def _augment_like_decoder(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
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
        return {"loss": classifier_loss(model, _augment_like_decoder(batch.images, gen), batch.scenes)}

    run_steps(
        stage_dir / "run",
        {"model": model},
        opt,
        cfg.classifier_steps,
        loss_fn,
        cfg.checkpoint_every,
        lr_lambda=warmup_cosine(cfg.classifier_steps),
        desc="classifier",
    )
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

    run_steps(
        stage_dir / "run",
        {"model": model},
        opt,
        cfg.clip_steps,
        loss_fn,
        cfg.checkpoint_every,
        lr_lambda=warmup_cosine(cfg.clip_steps, 100),
        desc="clip",
    )
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
    """Stage 3: the f=4 ``AutoencoderKL`` (L1 + MSE + a tiny KL), bf16 autocast (2x faster here)."""
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.sizes)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    bsz = cfg.vae_batch

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        vae.train()
        images = scene_batch(_VAE_STREAM + cfg.seed, step * bsz, bsz, cfg.sizes.image_size).images
        return vae_loss(vae, images, torch.Generator().manual_seed(step), cfg.vae_kl_weight)

    run_steps(
        stage_dir / "run",
        {"model": vae},
        opt,
        cfg.vae_steps,
        loss_fn,
        cfg.checkpoint_every,
        lr_lambda=warmup_cosine(cfg.vae_steps, 100),
        desc="vae",
    )
    # Phase 2: fine-tune with the shapes' pixels up-weighted (as SD fine-tuned its VAE in a second
    # phase), on the next samples of the stream.
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_finetune_lr, weight_decay=0.0)

    def finetune_loss_fn(step: int) -> dict[str, torch.Tensor]:
        vae.train()
        start = (cfg.vae_steps + step) * bsz
        images = scene_batch(_VAE_STREAM + cfg.seed, start, bsz, cfg.sizes.image_size).images
        gen = torch.Generator().manual_seed(cfg.vae_steps + step)
        return vae_loss(vae, images, gen, cfg.vae_kl_weight, cfg.vae_object_weight)

    run_steps(
        stage_dir / "finetune",
        {"model": vae},
        opt,
        cfg.vae_finetune_steps,
        finetune_loss_fn,
        cfg.checkpoint_every,
        lr_lambda=warmup_cosine(cfg.vae_finetune_steps, 50),
        desc="vae-finetune",
    )
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


@torch.no_grad()
def _render_chunk(args: tuple[int, int, int, int]) -> tuple[torch.Tensor, list[str]]:
    """Images and captions of one chunk of a stream (a top-level function: worker processes)."""
    seed, start, n, image_size = args
    batch = scene_batch(seed, start, n, image_size)
    return batch.images, batch.captions


def build_cache(
    cfg: ToyTrainConfig,
    cache_path: Path,
    vae,
    tokenizer,
    text_encoder,
    device: torch.device = _CPU,
    workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Stage 4: scaled VAE latents (posterior means) and text embeddings of the teacher's data.

    ``workers`` > 0 renders in that many processes (rendering, not encoding, is the slow part on a
    GPU machine); the encoders run on ``device``. The cache itself is stored on the CPU.
    """
    if cache_path.exists():
        return load_file(str(cache_path))
    latents, embeds = [], []
    chunk = 500
    jobs = [
        (_CACHE_STREAM + cfg.seed, start, min(chunk, cfg.cache_samples - start), cfg.sizes.image_size)
        for start in range(0, cfg.cache_samples, chunk)
    ]
    # Spawned, not forked: a child forked after torch started its OpenMP threads can hang.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers else None
    rendered = pool.map(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
    for images, captions in tqdm(rendered, total=len(jobs), desc="cache", mininterval=10):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            mean = vae.encode(images.to(device)).latent_dist.mean.float()
        latents.append((mean * vae.config.scaling_factor).cpu())
        embeds.append(encode_text(tokenizer, text_encoder, captions).half().cpu())
    if pool:
        pool.shutdown()
    cache = {
        "latents": torch.cat(latents).contiguous(),
        "text_embeds": torch.cat(embeds).contiguous(),
        "uncond_embeds": encode_text(tokenizer, text_encoder, [""]).half().cpu().contiguous(),
    }
    tmp = cache_path.with_suffix(".tmp")
    save_file(cache, str(tmp))
    os.replace(tmp, cache_path)
    return cache


def sd_noise_scheduler(zero_terminal_snr: bool = False):
    """SD-v1's training schedule: 1000 steps, scaled-linear betas 0.00085..0.012, epsilon.

    ``zero_terminal_snr`` rescales the betas so the last step is pure noise and switches to
    v-prediction (Lin et al., 2024, "Common Diffusion Noise Schedules and Sample Steps Are
    Flawed"). SD's schedule leaves 6.8% of the image in x_T; on 16x16 toy latents the image mean
    (the background colour) is readable from that remnant, so a model trained on it takes the
    background from the noise instead of the caption, and samples from pure noise get it wrong.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction" if zero_terminal_snr else "epsilon",
        rescale_betas_zero_snr=zero_terminal_snr,
    )


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon prediction (Hang et al., 2023): min(SNR, g) / SNR."""
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    return torch.clamp(snr, max=gamma) / snr


def denoising_loss(
    unet,
    scheduler,
    x0: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    gen: torch.Generator,
    caption_dropout: float,
    min_snr_gamma: float,
) -> dict[str, torch.Tensor]:
    """SD's epsilon-prediction loss with Min-SNR weights; dropped captions teach the unconditional
    branch that classifier-free guidance needs.

    Randomness comes from the CPU generator ``gen`` whatever the device, so a run's draws depend
    on its seed alone; on CUDA the U-Net runs under bf16 autocast, the loss in float32.
    """
    bsz, device = x0.shape[0], x0.device
    drop = (torch.rand(bsz, generator=gen) < caption_dropout).to(device)
    cond = torch.where(drop[:, None, None], uncond, cond)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    t_cpu = torch.randint(0, scheduler.config.num_train_timesteps, (bsz,), generator=gen)
    t = t_cpu.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        pred = unet(scheduler.add_noise(x0, noise, t), t, cond).sample.float()
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)
    else:
        target = noise
    per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
    weights = (
        min_snr_weights(scheduler, t_cpu, min_snr_gamma).to(device)
        if min_snr_gamma > 0
        else torch.ones_like(per_sample)
    )
    weighted = (per_sample * weights).mean()
    return {"loss": weighted, "mse": per_sample.mean()}


def train_teacher(
    cfg: ToyTrainConfig,
    stage_dir: Path,
    cache: dict[str, torch.Tensor],
    device: torch.device = _CPU,
    deadline: float | None = None,
):
    """Stage 5: the teacher U-Net on cached latents; returns its EMA weights (on the CPU).

    ``deadline`` bounds both phases, each getting the share of the time left that its planned
    steps have: a cut run still ends with the zero-terminal-SNR phase its scheduler expects (an
    epsilon U-Net under the v-prediction scheduler samples garbage). ``stage_dir/steps.json``
    records the steps done in each phase: the ``unet_steps``/``zero_snr_steps`` that reproduce it.
    """
    torch.manual_seed(cfg.seed)
    cache = {k: v.to(device) for k, v in cache.items()}
    latent_size = cache["latents"].shape[-1]
    unet = build_unet(cfg.sizes, latent_size).to(device)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=1e-2)
    scheduler = sd_noise_scheduler()
    n = cache["latents"].shape[0]
    bsz = cfg.unet_batch

    def loss_fn(step: int) -> dict[str, torch.Tensor]:
        unet.train()
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        idx = torch.randint(0, n, (bsz,), generator=gen).to(device)
        return denoising_loss(
            unet,
            scheduler,
            cache["latents"][idx],
            cache["text_embeds"][idx].float(),
            cache["uncond_embeds"].float(),
            gen,
            cfg.caption_dropout,
            cfg.min_snr_gamma,
        )

    eps_deadline = None
    if deadline is not None:
        now = time.time()
        eps_deadline = now + max(0.0, deadline - now) * cfg.unet_steps / (cfg.unet_steps + cfg.zero_snr_steps)
    # A phase cut by its deadline stays that long when the run is resumed.
    eps_marker = stage_dir / "eps_steps.json"
    eps_steps = json.loads(eps_marker.read_text())["unet_steps"] if eps_marker.exists() else cfg.unet_steps
    eps_done = run_steps(
        stage_dir / "run",
        {"model": unet},
        opt,
        eps_steps,
        loss_fn,
        cfg.checkpoint_every,
        lr_lambda=lambda s: _warmup_constant(s, cfg.unet_warmup),
        ema=ema,
        ema_decay=cfg.ema_decay,
        desc="teacher",
        deadline=eps_deadline,
    )
    _write_json(eps_marker, {"unet_steps": eps_done})
    # Phase 2: fine-tune the EMA weights to a zero-terminal-SNR schedule with v-prediction, as Lin
    # et al. fine-tuned SD-2.1 (see sd_noise_scheduler); Min-SNR weighting is off (it would give
    # the pure-noise step zero weight).
    unet.load_state_dict(ema.state_dict())
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.zero_snr_lr, weight_decay=1e-2)
    zero_snr = sd_noise_scheduler(zero_terminal_snr=True)

    def zero_snr_loss_fn(step: int) -> dict[str, torch.Tensor]:
        unet.train()
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + cfg.unet_steps + step)
        idx = torch.randint(0, n, (bsz,), generator=gen).to(device)
        return denoising_loss(
            unet,
            zero_snr,
            cache["latents"][idx],
            cache["text_embeds"][idx].float(),
            cache["uncond_embeds"].float(),
            gen,
            cfg.caption_dropout,
            min_snr_gamma=0.0,
        )

    done = run_steps(
        stage_dir / "zero_snr",
        {"model": unet},
        opt,
        cfg.zero_snr_steps,
        zero_snr_loss_fn,
        cfg.checkpoint_every,
        lr_lambda=lambda s: _warmup_constant(s, 100),
        ema=ema,
        ema_decay=cfg.ema_decay,
        desc="teacher-zero-snr",
        deadline=deadline,
    )
    _write_json(stage_dir / "steps.json", {"unet_steps": eps_done, "zero_snr_steps": done})
    if done < min(cfg.zero_snr_steps, 100):
        raise EdgefusionError(
            f"the zero-terminal-SNR phase got {done} steps before the deadline, too few for the U-Net "
            "to match its v-prediction scheduler: run again with more time (it resumes)"
        )
    return ema.eval().cpu()


def retrain_teacher(
    cfg: ToyTrainConfig,
    work_dir: Path,
    out_dir: Path,
    encoders: Path,
    device: torch.device = _CPU,
    workers: int = 0,
    deadline: float | None = None,
) -> dict:
    """Stages 4-5 only: cache and teacher on the frozen tokenizer, text encoder and VAE of an
    existing toy pipeline folder (``encoders``, e.g. the shipped teacher), so a bigger teacher run
    (on a GPU) keeps every encoder, and so every latent cache and evaluator, unchanged.

    Writes ``out_dir/teacher``: a copy of ``encoders`` with the new U-Net (fp16, as shipped).
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    work_dir.mkdir(parents=True, exist_ok=True)
    _write_json(work_dir / "config.json", {**asdict(cfg), "encoders": str(encoders)})
    t_start = time.time()
    tokenizer = load_toy_tokenizer()
    text_encoder = CLIPTextModel.from_pretrained(encoders / "text_encoder", torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(encoders / "vae", torch_dtype=torch.float32)
    text_encoder, vae = text_encoder.to(device).eval(), vae.to(device).eval()
    cache = build_cache(cfg, work_dir / "cache.safetensors", vae, tokenizer, text_encoder, device, workers)
    timings = {"cache": round(time.time() - t_start, 1)}
    t = time.time()
    (work_dir / "teacher").mkdir(exist_ok=True)
    unet = train_teacher(cfg, work_dir / "teacher", cache, device, deadline)
    timings["teacher"] = round(time.time() - t, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output_dir(out_dir / "teacher", overwrite=True) as tmp:
        shutil.copytree(encoders, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("unet"))
        unet.to(torch.float16).save_pretrained(str(tmp / "unet"))
    timings["total"] = round(time.time() - t_start, 1)
    _write_json(work_dir / "timings.json", timings)
    return timings


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def assemble_pipeline(tokenizer, text_encoder, vae, unet):
    """The toy models as a standard ``StableDiffusionPipeline``, sampling with DDIM on the
    zero-terminal-SNR schedule (v-prediction, trailing timesteps) the teacher was fine-tuned to."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler.from_config(
        sd_noise_scheduler(zero_terminal_snr=True).config,
        clip_sample=False,
        set_alpha_to_one=False,
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
    tokenizer = load_toy_tokenizer()
    text_encoder = text_encoder_from_clip(clip)
    t = time.time()
    cache = build_cache(cfg, work_dir / "cache.safetensors", vae, tokenizer, text_encoder)
    timings["cache"] = round(time.time() - t, 1)
    unet = stage("teacher", train_teacher, cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = assemble_pipeline(tokenizer, text_encoder, vae, unet)
    with atomic_output_dir(out_dir / "teacher", overwrite=True) as tmp:
        pipe.to(torch.float16).save_pretrained(str(tmp))
    save_evaluator(classifier, clip, out_dir / "evaluator")
    timings["total"] = round(time.time() - t_start, 1)
    _write_json(work_dir / "timings.json", timings)
    return timings
