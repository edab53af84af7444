"""Distil a pipeline's VAE decoder into a tiny one: ``edgefusion decoder distill``.

The student has diffusers' ``AutoencoderTiny`` layout (TAESD, Boer Bohan 2023): per level a few
residual blocks of three 3x3 convolutions at one width, nearest-neighbour upsampling between
levels, no attention and no normalization (at TAESD's width of 64, 1.2M parameters against the
49.5M of SD's decoder).
It learns to map the pipeline's latents to what the pipeline's own VAE decodes from them:

    loss = pixel(tiny(z), clamp(vae.decode(z / s))) + gradient_weight * L1(grad tiny(z), grad target)

where ``z`` are latents as the U-Net makes them (the VAE posterior of a training image times the
VAE's scaling factor ``s``, sampled or its mean as ``data.sample_posterior`` says, or, for the
share ``generated.fraction`` of each batch, latents the pipeline itself samples from the batch's
captions, fresh noise every step), ``pixel`` is L1 or MSE, and ``grad`` the horizontal and
vertical pixel differences (an edge term: a small decoder trained on pixels alone blurs edges
first). The target is clamped to [-1, 1] as the
pipeline clamps its images. No perceptual loss: it needs pretrained weights we do not have.
Every step also logs the batch's ``psnr`` against the target (clamped images in [0, 1]).

The student's ``scaling_factor`` is 1.0, so a pipeline hands it the U-Net's latents unscaled, as
the student was trained (:mod:`edgefusion.pipeline.vae`). Only its decoder trains: its encoder
keeps its seeded random weights, so the output decodes like the target but cannot encode
(text-to-image never encodes; image-to-image needs the full VAE).

Generated latents matter because a decoder serves a sampler, not an encoder: a sampler's latents
are not the encodings of real images (sharper, off the posterior's support), and a tiny decoder
fitted to encodings alone loses more on them (on the toy LCM: 29.2 dB on held-out encodings, 27.0
on its own 2-step latents). ``init`` starts the student from a trained tiny decoder, so that such a
decoder can be fine-tuned on generated latents without training it again from random weights.

Data, its latent cache, the accelerate loop (resume, EMA, schedule, logs, checkpoints) are the
other training stages'. A latent cache (``data.cache``) skips the VAE encoder; without one every
batch runs it (and the text encoder, whose output is not used). The output is the pipeline with
the tiny decoder as its ``vae`` (``model_index.json`` says ``AutoencoderTiny``), which plain
diffusers loads; ``vae/edgefusion.json`` records how it was made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgefusion import __version__
from edgefusion.arch.compression import copy_pipeline_without_unet
from edgefusion.atomic import atomic_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_config_mapping, read_json_file
from edgefusion.pipeline.load import cast_
from edgefusion.provenance import PROVENANCE_FILE
from edgefusion.train.config import DataConfig, LoopConfig, apply_overrides, config_from_dict, save_config
from edgefusion.train.models import pipeline_folder
from edgefusion.train.stage import SAVE_DTYPES, StageReport, open_stage

CONFIG_NAME = "decoder.yaml"
#: The optimization of a decoder trained from random weights, where the config does not say
#: otherwise (:class:`LoopConfig`'s defaults are BK-SDM's U-Net fine-tuning, far too gentle here).
TRAIN_DEFAULTS = {"learning_rate": 1e-3, "batch_size": 16, "lr_warmup_steps": 100, "ema_decay": None}
#: TAESD's decoder: 64 channels, 3 blocks per level and 1 at full resolution.
TAESD_CHANNELS, TAESD_BLOCKS, TAESD_LAST_BLOCKS = 64, 3, 1


@dataclass
class DecoderLossConfig:
    """``pixel``: ``l1`` or ``mse`` between the tiny decoder's image and the target (both in
    [-1, 1]); ``gradient_weight``: the weight of the L1 distance of their pixel differences."""

    pixel: Literal["l1", "mse"] = "l1"
    gradient_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.pixel not in ("l1", "mse"):
            raise EdgefusionError("loss.pixel must be l1 or mse")
        if self.gradient_weight < 0:
            raise EdgefusionError("loss.gradient_weight must be 0 or more")


@dataclass
class GeneratedLatentsConfig:
    """Latents the pipeline samples itself, decoded in training beside the data's.

    ``fraction``: the share of each batch (0: none; 1: all) whose latents are replaced by ones the
    pipeline samples from the same captions; ``steps`` and ``guidance``: how it samples them (null:
    the model's own defaults, as ``generate`` samples it)."""

    fraction: float = 0.0
    steps: int | None = None
    guidance: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise EdgefusionError("generated.fraction must be between 0 and 1")
        if self.steps is not None and self.steps < 1:
            raise EdgefusionError("generated.steps must be at least 1 (or null: the model's default)")


@dataclass
class DecoderDistillConfig:
    """``edgefusion decoder distill``: whose decoder, how big the student, on what data.

    - ``model``: the pipeline whose VAE decoder is distilled (a folder or ``toy:NAME``); the output
      is a copy of it with the tiny decoder as its VAE.
    - ``channels``: the student's width at every level (TAESD: 64).
    - ``blocks``: residual blocks per level, one entry per level of the model's VAE (null: TAESD's
      3 per level and 1 at full resolution, so ``[3, 3, 3, 1]`` for SD).
    - ``init``: a tiny decoder (decoder or pipeline folder) whose weights the student starts from,
      of the same ``channels`` and ``blocks`` (null: seeded random weights).
    - ``generated``: the share of each batch decoded from the pipeline's own samples.
    - ``train``: the shared loop's settings; unset ones default to :data:`TRAIN_DEFAULTS`, then
      to the loop's own.
    """

    model: str = ""
    out: str = "runs/decoder/out"
    run_dir: str = "runs/decoder/run"
    overwrite: bool = False
    channels: int = TAESD_CHANNELS
    blocks: list[int] | None = None
    init: str | None = None
    generated: GeneratedLatentsConfig = field(default_factory=GeneratedLatentsConfig)
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    loss: DecoderLossConfig = field(default_factory=DecoderLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=lambda: LoopConfig(**TRAIN_DEFAULTS))

    def __post_init__(self) -> None:
        if not self.model:
            raise EdgefusionError("set model (--model): the pipeline whose VAE decoder is distilled")
        if not self.data.path:
            raise EdgefusionError("set data.path (an imagefolder or WebDataset .tar shards)")
        if self.channels < 1:
            raise EdgefusionError("channels must be at least 1")
        if self.blocks is not None and (not self.blocks or min(self.blocks) < 1):
            raise EdgefusionError("blocks must list at least 1 block per level (or be null: TAESD's)")


def load_decoder_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> DecoderDistillConfig:
    """The config in the YAML/JSON file ``path`` with ``overrides``, the ``train`` settings it
    leaves unset taken from :data:`TRAIN_DEFAULTS`."""
    data = read_config_mapping(path, "config file") if path is not None else {}
    train_section = data.get("train") or {}
    if not isinstance(train_section, dict):
        raise EdgefusionError(f"config section train must be a mapping, got {train_section!r}")
    data = {**data, "train": {**TRAIN_DEFAULTS, **train_section}}
    return config_from_dict(DecoderDistillConfig, apply_overrides(data, overrides or []))


def tiny_decoder(vae_config: dict[str, Any], channels: int, blocks: list[int] | None, seed: int) -> Any:
    """A randomly initialized ``AutoencoderTiny`` (seeded) for a VAE of config ``vae_config``:
    as many levels as it has (so the same upsampling), its latent channels, ``scaling_factor`` 1."""
    from diffusers import AutoencoderTiny

    levels = len(vae_config["block_out_channels"])
    blocks = blocks or [TAESD_BLOCKS] * (levels - 1) + [TAESD_LAST_BLOCKS]
    if len(blocks) != levels:
        raise EdgefusionError(
            f"blocks lists {len(blocks)} levels, but the model's VAE has {levels} (it upsamples "
            f"{2 ** (levels - 1)}x): give {levels} entries, or null for TAESD's"
        )
    torch.manual_seed(seed)
    return AutoencoderTiny(
        in_channels=vae_config.get("in_channels", 3),
        out_channels=vae_config.get("out_channels", 3),
        encoder_block_out_channels=(channels,) * levels,
        decoder_block_out_channels=(channels,) * levels,
        latent_channels=vae_config["latent_channels"],
        num_encoder_blocks=(1,) + (TAESD_BLOCKS,) * (levels - 1),
        num_decoder_blocks=tuple(blocks),
        scaling_factor=1.0,
    )


def load_initial_weights(tiny: Any, spec: str) -> None:
    """Load the decoder weights of the tiny decoder in ``spec`` into ``tiny``, whose layout must be
    the same (the student's ``channels`` and ``blocks``)."""
    from edgefusion.pipeline.vae import load_decoder

    source = load_decoder(spec)
    if type(source).__name__ != "AutoencoderTiny":
        raise EdgefusionError(
            f"init {spec} holds an {type(source).__name__}: give a tiny decoder to start from"
        )
    try:
        tiny.decoder.load_state_dict(source.decoder.state_dict())
    except RuntimeError as err:
        raise EdgefusionError(
            f"init {spec} has another layout than the student (channels and blocks must match it): "
            f"{str(err).splitlines()[-1].strip()}"
        ) from err


class LatentSampler:
    """The pipeline of ``model`` sampling latents (as its U-Net makes them, before the decoder)
    from caption embeddings, with the model's own steps and guidance unless ``generated`` sets them."""

    def __init__(
        self, model: str, generated: GeneratedLatentsConfig, resolution: int, device: Any, dtype: Any
    ) -> None:
        from edgefusion.pipeline.load import load_pipeline
        from edgefusion.pipeline.sampling import sampling_defaults

        self.pipe = load_pipeline(model, dtype=dtype).to(device)
        self.steps, self.guidance = sampling_defaults(self.pipe, model, generated.steps, generated.guidance)
        self.resolution = resolution

    @torch.no_grad()
    def __call__(self, text: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.pipe(
            prompt_embeds=text.to(self.pipe.dtype),
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            generator=gen,
            height=self.resolution,
            width=self.resolution,
            output_type="latent",
        ).images.float()


def image_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical differences of neighbouring pixels."""
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


def batch_psnr(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean PSNR (dB) over a batch of images in [-1, 1], measured as images in [0, 1] after the
    pipeline's clamp."""
    mse = ((images.clamp(-1, 1) - target.clamp(-1, 1)) / 2).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()


def decoder_loss(
    decoder: nn.Module, vae: Any, latents: torch.Tensor, loss: DecoderLossConfig
) -> dict[str, torch.Tensor]:
    """The distillation loss of one batch of scaled latents (see the module docstring)."""
    with torch.no_grad():
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        target = decoded.float().clamp(-1, 1)
    images = decoder(latents).float()
    pixel = F.l1_loss(images, target) if loss.pixel == "l1" else F.mse_loss(images, target)
    terms = {"pixel": pixel}
    total = pixel
    if loss.gradient_weight > 0:
        pairs = zip(image_gradients(images), image_gradients(target), strict=True)
        terms["gradient"] = sum(F.l1_loss(a, b) for a, b in pairs)
        total = total + loss.gradient_weight * terms["gradient"]
    return {
        "loss": total,
        **{k: v.detach() for k, v in terms.items()},
        "psnr": batch_psnr(images.detach(), target),
    }


def distill_decoder(config: DecoderDistillConfig) -> StageReport:
    """Train a tiny decoder to reproduce ``config.model``'s VAE decoder; write the pipeline with it.

    Re-running with the same config resumes from the newest checkpoint in ``config.run_dir``.
    Under ``accelerate launch`` it runs data-parallel on every process.
    """
    from diffusers import AutoencoderKL

    run = open_stage(config, [config.model, config.data.path, config.init])

    # The frozen full decoder (the target) and the student, whose decoder alone trains.
    pipeline = pipeline_folder(config.model)
    vae_config = read_json_file(pipeline / "vae" / "config.json", "VAE config")
    if vae_config.get("_class_name") != "AutoencoderKL":
        raise EdgefusionError(
            f"{config.model}'s VAE is a {vae_config.get('_class_name')}, not an AutoencoderKL: distil "
            "from the pipeline with the full VAE"
        )
    generated = config.generated
    sampler = None
    if generated.fraction > 0:
        device = run.accelerator.device
        sampler = LatentSampler(config.model, generated, config.data.resolution, device, run.dtype)
    # The sampling pipeline holds the same VAE: load it once.
    if sampler is not None:
        vae = run.freeze(sampler.pipe.vae)
    else:
        vae = run.freeze(AutoencoderKL.from_pretrained(pipeline, subfolder="vae"))
    tiny = tiny_decoder(vae_config, config.channels, config.blocks, config.train.seed)
    if config.init:
        load_initial_weights(tiny, config.init)
    student = tiny.decoder.float().requires_grad_(True).train()
    data = run.data(pipeline)

    def objective(model: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        latents, text = data.latents_and_text(batch, gen)
        sampled = round(len(latents) * generated.fraction)
        if sampler is not None and sampled:
            latents = torch.cat([sampler(text[:sampled], gen).to(latents.dtype), latents[sampled:]])
        return decoder_loss(model, vae, latents, config.loss)

    ema = run.student_ema(student)
    result = run.train(student, objective, data, ema, desc="decoder")

    def write(record: dict[str, Any]) -> None:
        if ema is not None:
            tiny.decoder.load_state_dict(ema.module.state_dict())
        provenance = {
            "stage": "decoder distill",
            "method": "tiny decoder (AutoencoderTiny layout) distilled from the pipeline's VAE decoder",
            "source": str(config.model),
            "encoder": "untrained (seeded random weights): decode only",
            "loss": {"pixel": config.loss.pixel, "gradient_weight": config.loss.gradient_weight},
            "sample_posterior": config.data.sample_posterior,
            "init": config.init,
            "generated": (
                {"fraction": generated.fraction, "steps": sampler.steps, "guidance": sampler.guidance}
                if sampler is not None
                else None
            ),
            "ema_decay": config.train.ema_decay,
            **record,
        }
        cast_(tiny, SAVE_DTYPES[config.save_dtype])
        save_decoder_pipeline(tiny, pipeline, run.out, provenance, config, config.overwrite)

    return run.end(write, result, data)


def save_decoder_pipeline(
    decoder: Any,
    pipeline: Path,
    out: Path,
    provenance: dict[str, Any],
    config: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write ``pipeline`` with ``decoder`` as its ``vae`` to ``out``, atomically: every other file
    copied, ``model_index.json`` naming the decoder's class, ``provenance`` beside the decoder's
    config and the stage ``config`` (when given) at the root."""
    with atomic_output_dir(out, overwrite) as staging:
        copy_pipeline_without_unet(pipeline, staging, component="vae")
        decoder.save_pretrained(staging / "vae")
        record = {**provenance, "edgefusion_version": __version__}
        (staging / "vae" / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        index = json.loads((staging / "model_index.json").read_text(encoding="utf-8"))
        index["vae"] = ["diffusers", type(decoder).__name__]
        (staging / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        if config is not None:
            save_config(config, staging / CONFIG_NAME)
    return out
