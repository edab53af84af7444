"""Resumable training checkpoints, written atomically.

A checkpoint is a folder ``step-XXXXXXX`` holding each module's weights as safetensors, the
optimizer state (loaded back with ``weights_only=True``) and ``state.json`` (the step). It is
written under a temporary name and renamed, so a kill never leaves a half-written checkpoint
that a resume would trust.

Two writers share that layout: :func:`save_checkpoint` for plain single-process loops, and
:func:`save_training_state` for the accelerate loop of the distillation stages, which stores
accelerate's own state (model, optimizer, RNG; sharded correctly under FSDP) plus the EMA copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgefusion.errors import EdgefusionError
from edgefusion.train.ema import EMA

_PREFIX = "step-"
_STATE_FILE = "state.json"
_EMA_FILE = "ema.safetensors"


def save_checkpoint(
    run_dir: Path, step: int, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, keep: int = 2
) -> Path:
    """Save ``modules`` and ``optimizer`` after ``step`` optimizer steps; keep the newest ``keep``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"{_PREFIX}{step:07d}"
    tmp = run_dir / f".tmp-{_PREFIX}{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, module in modules.items():
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / f"{name}.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(run_dir.glob(f"{_PREFIX}*"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob(f"{_PREFIX}*")) if run_dir.exists() else []
    return found[-1] if found else None


def load_checkpoint(run_dir: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> int:
    """Restore the newest checkpoint in ``run_dir``; returns its step (0 when there is none)."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return 0
    for name, module in modules.items():
        module.load_state_dict(load_file(str(ckpt / f"{name}.safetensors")))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    return json.loads((ckpt / "state.json").read_text())["step"]


def save_training_state(
    accelerator: Any, checkpoints_dir: Path, step: int, ema: EMA | None = None, keep: int = 2
) -> Path:
    """Save accelerate's training state after ``step`` optimizer steps, and the EMA weights.

    Every process takes part (accelerate writes one RNG file per process); the main process then
    renames the finished folder into place and keeps the newest ``keep``. The EMA is written as
    safetensors rather than registered with accelerate, whose custom states load as pickles.
    """
    final = checkpoints_dir / f"{_PREFIX}{step:07d}"
    tmp = checkpoints_dir / f".tmp-{_PREFIX}{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in ema.module.state_dict().items()}
            save_file(state, str(tmp / _EMA_FILE))
        state_json = {"step": step, "ema_updates": ema.num_updates if ema is not None else None}
        (tmp / _STATE_FILE).write_text(json.dumps(state_json))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(checkpoints_dir.glob(f"{_PREFIX}*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_training_state(accelerator: Any, checkpoints_dir: Path, ema: EMA | None = None) -> int:
    """Restore the newest state saved by :func:`save_training_state`; returns its step (0: none)."""
    ckpt = latest_checkpoint(checkpoints_dir)
    if ckpt is None:
        return 0
    accelerator.load_state(str(ckpt))
    state = json.loads((ckpt / _STATE_FILE).read_text())
    if ema is not None:
        if not (ckpt / _EMA_FILE).is_file():
            raise EdgefusionError(
                f"checkpoint {ckpt} was saved without EMA: resume with train.ema_decay=null, or use "
                "a new run_dir"
            )
        ema.module.load_state_dict(load_file(str(ckpt / _EMA_FILE)))
        ema.num_updates = state["ema_updates"]
    return state["step"]
