"""The training loop of the distillation stages (BK-SDM KD, latent consistency distillation).

One loop, driven by ``accelerate``: mixed precision, gradient accumulation, gradient clipping,
optional EMA, DDP/FSDP under ``accelerate launch`` (never a home-made launcher), checkpoints that
resume exactly, every loss term logged to ``losses.csv`` and TensorBoard, a progress bar. A
method brings only its objective: ``loss_fn(model, batch, gen) -> {"loss": ..., term: ...}``,
called with the prepared (possibly DDP-wrapped) model, a batch already on the device, and a
generator seeded by ``(seed, micro-batch, rank)`` from which it must draw all its randomness.

A run folder holds ``config.yaml`` (the stage config), ``losses.csv``, ``tensorboard/`` and
``checkpoints/step-XXXXXXX``. Re-running the same command resumes from the newest checkpoint and
reproduces the uninterrupted run: batches and noise depend on the step alone (see
:mod:`edgefusion.train.data`), and the model, optimizer and EMA come back bit for bit.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from edgefusion.atomic import atomic_file
from edgefusion.config import config_from_dict, config_to_dict, save_config
from edgefusion.errors import EdgefusionError
from edgefusion.train.checkpoint import latest_checkpoint, load_training_state, save_training_state
from edgefusion.train.config import LoopConfig
from edgefusion.train.data import generator_for, make_loader
from edgefusion.train.ema import EMA

CONFIG_FILE = "config.yaml"
LOSSES_FILE = "losses.csv"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
#: Config keys a resumed run may change: they do not alter the steps already taken. ``run_dir``
#: among them lets a copy of a run folder (say, cut back to an earlier checkpoint) resume elsewhere;
#: ``guidance_scale`` and ``save_dtype`` only describe the output.
RESUMABLE_KEYS = (
    "run_dir",
    "guidance_scale",
    "save_dtype",
    "train.steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.final_checkpoint",
    "data.num_workers",
    "out",
    "overwrite",
)
_FROZEN_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

LossFn = Callable[[nn.Module, dict[str, Any], torch.Generator], dict[str, torch.Tensor]]


@dataclass
class LoopResult:
    """What :func:`train` did: total optimizer steps, where this call started, the last logged
    row's losses, and the corrupt samples the data stream passed over during the whole run."""

    steps: int
    resumed_from: int
    last_losses: dict[str, float] = field(default_factory=dict)
    skipped_corrupt: int = 0


def make_accelerator(cfg: LoopConfig, run_dir: Path) -> Any:
    """The run's ``Accelerator``: mixed precision, accumulation, TensorBoard under ``run_dir``."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / TENSORBOARD_DIR))
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        log_with="tensorboard",
        project_config=project,
    )


def frozen_dtype(accelerator: Any) -> torch.dtype:
    """The dtype of frozen models (teacher, VAE, text encoder): the mixed-precision dtype, as in
    BK-SDM's script; trained weights stay float32."""
    return _FROZEN_DTYPES.get(accelerator.mixed_precision, torch.float32)


def open_run(run_dir: Path, config: Any, write: bool, may_change: Sequence[str] = RESUMABLE_KEYS) -> None:
    """Save ``config`` as the run's ``config.yaml``; if the run has checkpoints, first check that
    it was started with the same config, except for ``may_change`` keys. A setting added to the
    config class after the run started counts as its default there (the run ran without it)."""
    saved_file = run_dir / CONFIG_FILE
    if saved_file.is_file() and latest_checkpoint(run_dir / CHECKPOINTS_DIR) is not None:
        saved_data = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
        try:
            saved = _flatten(config_to_dict(config_from_dict(type(config), saved_data)))
        except EdgefusionError:  # a setting since removed: compare as written, which names it
            saved = _flatten(saved_data)
        current = _flatten(config_to_dict(config))
        if current.get("train.lr_schedule") == "cosine":
            # The cosine spans the run's steps: a new length changes the steps already taken.
            may_change = [key for key in may_change if key != "train.steps"]
        changed = sorted(
            key
            for key in saved.keys() | current.keys()
            if saved.get(key) != current.get(key) and key not in may_change
        )
        if changed:
            raise EdgefusionError(
                f"{run_dir} holds checkpoints of a run with another config ({', '.join(changed)} differ): "
                "resume with the same config, or set run_dir to a new folder"
            )
    if write:
        save_config(config, saved_file)


def lr_factor(step: int, cfg: LoopConfig) -> float:
    """Learning-rate factor of 0-based optimizer step ``step``: linear warm-up over
    ``cfg.lr_warmup_steps`` steps, then constant (BK-SDM) or a half cosine that reaches zero at the
    end of the run (``cfg.lr_schedule``). It depends on the step alone, so a resumed run continues it."""
    if step < cfg.lr_warmup_steps:
        return (step + 1) / cfg.lr_warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    decay_steps = cfg.steps - cfg.lr_warmup_steps
    progress = (step - cfg.lr_warmup_steps) / decay_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(
    model: nn.Module, cfg: LoopConfig, rates: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` as optimizer groups, each with its base ``lr``: those
    whose name starts with a prefix of ``rates`` train at that rate, the rest at
    ``cfg.learning_rate`` (a fine-tuned encoder beside a U-Net wants a gentler rate)."""
    rates = rates or {}
    groups: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in ("", *rates)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[next((p for p in rates if name.startswith(p)), "")].append(param)
    return [
        {"params": params, "lr": rates.get(prefix, cfg.learning_rate)}
        for prefix, params in groups.items()
        if params
    ]


def make_optimizer(groups: list[dict[str, Any]], cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW with ``cfg``'s settings, fused: one kernel updates every tensor, where the default
    launches several per tensor, which dominates a step of a model with many small tensors."""
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
        fused=True,
    )


def train(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    cfg: LoopConfig,
    run_dir: Path,
    accelerator: Any,
    ema: EMA | None = None,
    num_workers: int = 0,
    desc: str = "train",
    lr_by_prefix: dict[str, float] | None = None,
) -> LoopResult:
    """Train ``model`` (its parameters that require grad) for ``cfg.steps`` optimizer steps with
    AdamW, resuming from the newest checkpoint in ``run_dir``; ``ema`` follows the model.
    ``lr_by_prefix`` gives parameters named with a prefix their own rate (:func:`param_groups`);
    the schedule scales every rate alike.

    The caller ends the run with ``accelerator.end_training()`` once its outputs are written: that
    flushes TensorBoard and, under ``accelerate launch``, destroys the process group."""
    # The optimizer sees the trainable parameters only; accelerate wraps model and optimizer.
    groups = param_groups(model, cfg, lr_by_prefix)
    params = [p for group in groups for p in group["params"]]
    base_lrs = [group["lr"] for group in groups]  # a resumed optimizer's groups hold scheduled rates
    optimizer = make_optimizer(groups, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ema is not None:
        ema.module.to(accelerator.device)
    checkpoints = run_dir / CHECKPOINTS_DIR
    start = load_training_state(accelerator, checkpoints, ema)
    log = run_dir / LOSSES_FILE
    if accelerator.is_main_process:
        _truncate_rows(log, start)
    accelerator.init_trackers(desc, init_kwargs={"tensorboard": {"purge_step": start + 1}})

    micro_per_step = cfg.gradient_accumulation
    loader = make_loader(
        dataset,
        cfg.batch_size,
        cfg.seed,
        start * micro_per_step,
        accelerator.num_processes,
        accelerator.process_index,
        num_workers,
    )
    batches = iter(loader)
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=desc,
        disable=not accelerator.is_local_main_process,
        mininterval=5,
    )
    model.train()
    t0 = time.time()
    row: dict[str, float] = {}
    for step in range(start + 1, cfg.steps + 1):
        factor = lr_factor(step - 1, cfg)
        for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base_lr * factor
        sums, skipped, grad_norm = _optimizer_step(
            model, loss_fn, batches, optimizer, params, cfg, accelerator, step
        )
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        row = _step_row(step, sums, skipped, grad_norm, cfg.learning_rate * factor, accelerator)
        row["seconds"] = round(time.time() - t0, 3)
        if accelerator.is_main_process:
            _append_row(log, row)
        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4g}")
        if step % cfg.checkpoint_every == 0 or (step == cfg.steps and cfg.final_checkpoint):
            save_training_state(accelerator, checkpoints, step, ema, cfg.keep_checkpoints)
    bar.close()
    last = {k: v for k, v in row.items() if k not in ("step", "lr", "grad_norm", "skipped", "seconds")}
    return LoopResult(max(start, cfg.steps), start, last, _column_total(log, "skipped"))


def _optimizer_step(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterator[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    cfg: LoopConfig,
    accelerator: Any,
    step: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
    """Optimizer step ``step``: its micro-batches, each with the generator of its index. Returns the
    loss terms averaged over the micro-batches, the corrupt samples the stream skipped, and the
    gradient norm before clipping (None unless gradients were synchronized)."""
    micro_per_step = cfg.gradient_accumulation
    sums: dict[str, torch.Tensor] = {}
    skipped = torch.zeros((), device=accelerator.device)
    grad_norm = None
    for micro in range(micro_per_step):
        batch = _to_device(next(batches), accelerator.device)
        skipped += batch.pop("skipped", torch.zeros(())).sum().to(skipped.device)
        gen = generator_for(cfg.seed, (step - 1) * micro_per_step + micro, accelerator.process_index)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                losses = loss_fn(model, batch, gen)
            accelerator.backward(losses["loss"])
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float() / micro_per_step
    return sums, skipped, grad_norm


def _step_row(
    step: int,
    sums: dict[str, torch.Tensor],
    skipped: torch.Tensor,
    grad_norm: Any,
    lr: float,
    accelerator: Any,
) -> dict[str, Any]:
    """The ``losses.csv`` row of a step: each term averaged over the processes, the scheduled base
    rate, the gradient norm and the samples skipped on all processes."""
    names = list(sums)
    means = accelerator.reduce(torch.stack([sums[n] for n in names]), reduction="mean")
    row = {"step": step, **{n: float(v) for n, v in zip(names, means, strict=True)}}
    row["lr"] = lr
    row["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
    row["skipped"] = int(accelerator.reduce(skipped, reduction="sum"))
    return row


def read_rows(log: Path) -> list[dict[str, str]]:
    """The rows of a ``losses.csv`` (empty when there is none)."""
    if not log.is_file():
        return []
    with log.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _append_row(log: Path, row: dict[str, Any]) -> None:
    new = not log.is_file()
    with log.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_rows(log: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they are logged again), atomically."""
    rows = read_rows(log)
    kept = [r for r in rows if int(r["step"]) <= last_step]
    if len(kept) == len(rows):
        return
    with atomic_file(log) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def _column_total(log: Path, column: str) -> int:
    return sum(int(r[column]) for r in read_rows(log) if r.get(column))


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
