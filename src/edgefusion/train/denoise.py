"""Stable Diffusion's own objective, from scratch or from an init: ``edgefusion train``.

The teacher that every other stage learns from is trained here: a U-Net, random (from a diffusers
``UNet2DConditionModel`` config) or loaded, learns to denoise the latents of the pipeline's frozen
VAE, conditioned on its frozen text encoder. The objective is SD's (Rombach et al., 2022):

    loss = mean_b  weight(t_b) * MSE(unet(x_t, t, text), target)

where ``target`` is the noise (epsilon prediction) or the velocity (v-prediction), as the
pipeline's noise schedule says; captions are dropped to the empty prompt at ``caption_dropout``
so the U-Net also learns the unconditional branch that classifier-free guidance needs;
``weight`` is 1, or Min-SNR-gamma (Hang et al., 2023) when ``min_snr_gamma`` is set: the
error of x0 weighted by ``min(SNR, gamma)``, or (``min_snr_clip: prediction``) the error of what
the U-Net predicts capped at weight 1 from SNR ``gamma`` on.

The text encoder stays frozen, as in SD, unless ``text_encoder_lr`` is set: then it is fine-tuned
with the U-Net and ships in the output (a frozen encoder that gives two words nearly the same
states leaves the U-Net no way to tell them apart).

Everything else is the run it shares with ``distill`` and ``lcm`` (:mod:`~edgefusion.train.stage`):
data and its latent cache, the accelerate loop (resume, EMA, schedule, logs, checkpoints) and the
pipeline writer. The output is the
pipeline with the trained (EMA) U-Net, and the guidance scale it is meant to be sampled with
recorded beside it, so every sampling command uses that scale by default.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn

from edgefusion.errors import EdgefusionError
from edgefusion.train.config import DataConfig, LoopConfig
from edgefusion.train.data import drop_captions
from edgefusion.train.loop import RESUMABLE_KEYS
from edgefusion.train.losses import forward_process
from edgefusion.train.models import check_conditioning, load_unet, pipeline_folder
from edgefusion.train.stage import StageReport, open_stage

CONFIG_NAME = "train.yaml"


@dataclass
class DenoiseConfig:
    """``edgefusion train``: which U-Net learns, on what data, for how long, and where it goes.

    - ``pipeline``: text encoder, VAE, tokenizer and noise schedule (a pipeline folder or
      ``toy:NAME``); the output carries them, with the trained U-Net in place of the pipeline's.
    - ``unet``: the initial weights (fine-tuning), or null to start from ``unet_config``.
    - ``unet_config``: a diffusers ``UNet2DConditionModel`` ``config.json`` for a randomly
      initialized U-Net (training from scratch).
      A resumed run takes its weights from its checkpoint, so these two may then change to any
      source of the same architecture (e.g. the config file, when the init folder of a packed
      leg's first run is not on this machine).
    - ``caption_dropout``: fraction of captions replaced by the empty prompt (10% in SD).
    - ``min_snr_gamma``: Min-SNR-gamma loss weights, or null for plain MSE.
    - ``min_snr_clip``: what Min-SNR clips. ``x0`` (Hang et al.): the x0 error weighted by
      ``min(SNR, gamma)``; for v-prediction that is ``min(SNR, gamma) / (SNR + 1)`` on the v loss,
      which is near 0 over the noisy half of a zero-terminal-SNR schedule (below 0.13 from
      t = 600 of 1000, exactly 0 at pure noise): the steps that lay out the image learn almost
      nothing. ``prediction``: the loss of the prediction target itself, weight 1 until its
      signal-to-noise ratio passes ``gamma`` (``min(SNR + 1, gamma) / (SNR + 1)`` for v, the same
      as ``x0`` for epsilon), so only the nearly clean steps are damped.
    - ``text_encoder_lr``: null keeps the pipeline's text encoder frozen (SD); a learning rate
      fine-tunes it jointly with the U-Net at that rate (its own optimizer group, the same
      schedule) and the output ships it, in float32 as SD pipelines keep it.
    - ``text_encoder``: a pipeline folder (or toy:NAME) whose text encoder replaces the pipeline's,
      for example one whose attribute words were moved apart. A latent cache holds the states of
      the pipeline's own encoder, so this one runs on the cached token ids every step; it stays
      frozen unless ``text_encoder_lr`` is set, and the output ships it.
    - ``guidance_scale``: the classifier-free guidance scale the model is meant to be sampled with,
      recorded in the output (choose it on validation prompts; see docs).
    """

    pipeline: str = ""
    unet: str | None = None
    unet_config: str | None = None
    out: str = "runs/train/out"
    run_dir: str = "runs/train/run"
    overwrite: bool = False
    caption_dropout: float = 0.1
    min_snr_gamma: float | None = None
    min_snr_clip: Literal["x0", "prediction"] = "x0"
    text_encoder_lr: float | None = None
    text_encoder: str | None = None
    guidance_scale: float = 7.5
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if not self.pipeline:
            raise EdgefusionError("set pipeline (a pipeline folder or toy:NAME): its encoders and schedule")
        if (self.unet is None) == (self.unet_config is None):
            raise EdgefusionError(
                "set exactly one of unet (initial weights) and unet_config (a U-Net config.json to "
                "start from random weights)"
            )
        if not self.data.path:
            raise EdgefusionError("set data.path (an imagefolder or WebDataset .tar shards)")
        if not 0 <= self.caption_dropout < 1:
            raise EdgefusionError("caption_dropout must lie in [0, 1)")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise EdgefusionError("min_snr_gamma must be positive (or null for plain MSE)")
        if self.text_encoder_lr is not None and self.text_encoder_lr <= 0:
            raise EdgefusionError(
                "text_encoder_lr must be positive (or null to keep the text encoder frozen)"
            )
        if self.min_snr_clip not in ("x0", "prediction"):
            raise EdgefusionError("min_snr_clip must be x0 or prediction")
        if self.guidance_scale < 1:
            raise EdgefusionError("guidance_scale must be 1 (no guidance) or more")


class TextConditionedUNet(nn.Module):
    """A U-Net and the text encoder it reads, trained as one model whose ``forward`` takes token
    ids: one module, so that DDP, the EMA and checkpoints treat both alike."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: nn.Module) -> None:
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, input_ids: torch.Tensor) -> Any:
        return self.unet(sample, timestep, self.text_encoder(input_ids)[0])


def snr_weights(
    noise_scheduler: Any, timesteps: torch.Tensor, gamma: float, clip: str = "x0"
) -> torch.Tensor:
    """Min-SNR-gamma weights of the prediction loss.

    ``clip="x0"``: ``min(SNR, gamma) / SNR`` for epsilon prediction and ``min(SNR, gamma) / (SNR + 1)``
    for v-prediction (the same weighting of the x0 error). ``clip="prediction"``: the target's own
    loss, capped: ``min(S, gamma) / S`` with ``S`` = SNR for epsilon and SNR + 1 for v, so every step
    noisier than SNR ``gamma`` keeps weight 1."""
    alpha_bar = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alpha_bar / (1 - alpha_bar)
    v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
    if v_prediction and clip == "prediction":
        return (snr + 1).clamp(max=gamma) / (snr + 1)
    clipped = snr.clamp(max=gamma)
    if v_prediction:
        return clipped / (snr + 1)
    return clipped / snr.clamp_min(1e-8)


def denoising_loss(
    unet: nn.Module,
    noise_scheduler: Any,
    latents: torch.Tensor,
    text_embeds: torch.Tensor,
    gen: torch.Generator,
    min_snr_gamma: float | None = None,
    min_snr_clip: str = "x0",
) -> dict[str, torch.Tensor]:
    """One evaluation of SD's objective on clean latents; every random draw comes from ``gen``.
    ``text_embeds`` is what ``unet`` is conditioned on: text states, or token ids for a
    :class:`TextConditionedUNet`.

    Returns ``loss`` (the weighted mean that is optimized) and ``mse`` (the unweighted one)."""
    noisy, timesteps, target = forward_process(noise_scheduler, latents, gen)
    pred = unet(noisy, timesteps, text_embeds).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if min_snr_gamma is None:
        return {"loss": per_sample.mean(), "mse": per_sample.mean().detach()}
    weights = snr_weights(noise_scheduler, timesteps, min_snr_gamma, min_snr_clip)
    return {"loss": (weights * per_sample).mean(), "mse": per_sample.mean().detach()}


def initial_unet(config: DenoiseConfig) -> UNet2DConditionModel:
    """The U-Net training starts from: loaded weights, or random ones from a config file (seeded
    by ``train.seed``, so two runs of one config start alike)."""
    if config.unet is not None:
        return load_unet(config.unet, "unet")
    path = Path(config.unet_config)
    try:
        unet_config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise EdgefusionError(f"could not read unet_config {path}: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise EdgefusionError(f"unet_config {path} is not valid JSON: {err}") from err
    torch.manual_seed(config.train.seed)
    try:
        return UNet2DConditionModel.from_config(unet_config)
    except (TypeError, ValueError) as err:
        raise EdgefusionError(
            f"unet_config {path} is not a valid UNet2DConditionModel config: {err}"
        ) from err


def train_unet(config: DenoiseConfig) -> StageReport:
    """Train a U-Net with SD's denoising objective and write it as a pipeline.

    Re-running with the same config resumes from the newest checkpoint in ``config.run_dir``.
    Under ``accelerate launch`` it runs data-parallel on every process.
    """
    # 1. The run (accelerator, run folder, a free output; a resumed run takes its weights from its
    #    checkpoint, so the init may change), the pipeline and its training noise schedule.
    may_change = (*RESUMABLE_KEYS, "unet", "unet_config")
    inputs = [config.pipeline, config.unet, config.text_encoder, config.data.path]
    run = open_stage(config, inputs, may_change)
    pipeline = pipeline_folder(config.pipeline)
    noise_scheduler = run.noise_schedule(pipeline)

    # 2. The U-Net, trained in float32 (mixed precision autocasts its matmuls), with the text
    #    encoder when that trains too.
    unet = initial_unet(config).float().requires_grad_(True).train()
    train_text = config.text_encoder_lr is not None
    # Text states come from a text encoder run on token ids when it trains or is not the pipeline's.
    read_ids = train_text or config.text_encoder is not None
    if read_ids:
        source = pipeline_folder(config.text_encoder) if config.text_encoder else pipeline
        model = _with_text_encoder(unet, source, train_text)
    else:
        model = unet

    # 3. Data: pairs (or their cached latents and text embeddings or token ids), skipping unusable samples.
    data = run.data(pipeline, token_ids=read_ids)
    check_conditioning(unet, unet, data.uncond_embeds)
    empty = data.uncond_ids if read_ids else data.uncond_embeds

    # 4. The objective of one micro-batch: latents from the VAE posterior (or its mean), captions dropped to
    #    the empty prompt at ``caption_dropout``, then the denoising loss.
    def objective(model: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        latents, cond = (data.latents_and_ids if read_ids else data.latents_and_text)(batch, gen)
        cond = drop_captions(cond, empty, config.caption_dropout, gen)
        return denoising_loss(
            model, noise_scheduler, latents, cond, gen, config.min_snr_gamma, config.min_snr_clip
        )

    # 5. Train (resumable), with the EMA the output ships when asked.
    ema = run.student_ema(model)
    lr_by_prefix = {"text_encoder.": config.text_encoder_lr} if train_text else None
    result = run.train(model, objective, data, ema, desc="train", lr_by_prefix=lr_by_prefix)

    # 6. The output: the pipeline with the trained (EMA) U-Net (and text encoder) and its
    #    sampling guidance.
    provenance = _provenance(config, noise_scheduler)
    final = ema.module if ema is not None else model
    if not read_ids:
        return run.finish(final, pipeline, CONFIG_NAME, provenance, result, data)

    def save_text_encoder(folder: Path) -> None:
        shutil.rmtree(folder / "text_encoder")
        final.text_encoder.to(torch.float32).save_pretrained(folder / "text_encoder")

    return run.finish(final.unet, pipeline, CONFIG_NAME, provenance, result, data, save_text_encoder)


def _with_text_encoder(unet: UNet2DConditionModel, pipeline: Path, trainable: bool) -> TextConditionedUNet:
    """``unet`` and the text encoder of ``pipeline`` (in float32) as one model; the encoder trains
    only when ``trainable``."""
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel.from_pretrained(pipeline, subfolder="text_encoder").float()
    text_encoder = text_encoder.requires_grad_(trainable).train(trainable)
    return TextConditionedUNet(unet, text_encoder)


def _provenance(config: DenoiseConfig, noise_scheduler: Any) -> dict[str, Any]:
    """How the output was made, beside its U-Net: the init, the objective and its sampling guidance."""
    return {
        "stage": "train",
        "method": "denoising (SD's objective)",
        "init": config.unet or f"random weights from {config.unet_config}",
        "prediction_type": noise_scheduler.config.prediction_type,
        "min_snr_gamma": config.min_snr_gamma,
        "min_snr_clip": config.min_snr_clip if config.min_snr_gamma is not None else None,
        "sample_posterior": config.data.sample_posterior,
        "text_encoder_lr": config.text_encoder_lr,
        "text_encoder": config.text_encoder,
        "guidance_scale": config.guidance_scale,
        "ema_decay": config.train.ema_decay,
    }
