"""The pieces every training stage's config is built from (:class:`DataConfig`, :class:`LoopConfig`).

Each stage (``train``, ``distill``, ``lcm``) has one config dataclass made of these; it loads,
takes ``key=value`` overrides and is saved next to its checkpoints through :mod:`edgefusion.config`,
whose functions are importable from here too, where the training code has always found them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from edgefusion.config import (  # noqa: F401  (the training stages' config functions)
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    require,
    save_config,
)

MixedPrecision = Literal["no", "fp16", "bf16"]
LRSchedule = Literal["constant", "cosine"]


@dataclasses.dataclass
class DataConfig:
    """Where training pairs come from, and the optional cache of their frozen encodings.

    ``path``: an HF imagefolder (images + ``metadata.jsonl``), one WebDataset ``.tar`` shard, or a
    folder of shards. ``cache``: a folder for VAE latents and text embeddings, built on first use
    with the frozen VAE and text encoder and reused while they and the data are unchanged.
    ``resolution``: image side in pixels; None takes the teacher pipeline's native size.
    ``sample_posterior``: train on latents sampled from each image's VAE posterior (SD's and
    BK-SDM's way); false trains on the posterior means. SD's VAE has a posterior so narrow that the
    two agree; a VAE whose posterior std is a sizeable share of the latents' spread (the toy VAE's
    is a fifth) adds that noise to every target, which the model cannot predict.
    """

    path: str = ""
    caption_column: str = "text"
    resolution: int | None = None
    cache: str | None = None
    cache_shard_size: int = 1024
    num_workers: int = 0
    sample_posterior: bool = True

    def __post_init__(self) -> None:
        require(self.resolution is None or self.resolution >= 8, "data.resolution must be at least 8")
        require(self.cache_shard_size >= 1, "data.cache_shard_size must be at least 1")
        require(self.num_workers >= 0, "data.num_workers must be 0 or more")


@dataclasses.dataclass
class LoopConfig:
    """The optimization shared by every training stage (defaults: BK-SDM's published recipe).

    ``batch_size`` is per device and per micro-batch; the effective batch is ``batch_size x
    gradient_accumulation x processes``. The learning rate warms up linearly for
    ``lr_warmup_steps`` optimizer steps, then stays constant. ``ema_decay`` None disables EMA.
    A run saves a resumable checkpoint every ``checkpoint_every`` steps and, unless
    ``final_checkpoint`` is false, at its last step: at full size that checkpoint (weights, EMA
    and Adam's moments) is several times the output, which a run that will not be continued
    does not need.
    """

    steps: int = 1000
    batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 5e-5
    lr_warmup_steps: int = 0
    lr_schedule: LRSchedule = "constant"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: MixedPrecision = "no"
    ema_decay: float | None = 0.9999
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    final_checkpoint: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation", "checkpoint_every", "keep_checkpoints"):
            require(getattr(self, name) >= 1, f"train.{name} must be at least 1")
        require(self.learning_rate > 0, "train.learning_rate must be positive")
        require(self.lr_warmup_steps >= 0, "train.lr_warmup_steps must be 0 or more")
        require(self.max_grad_norm > 0, "train.max_grad_norm must be positive")
        require(
            self.ema_decay is None or 0 < self.ema_decay < 1,
            "train.ema_decay must lie between 0 and 1 (or be null to disable EMA)",
        )
