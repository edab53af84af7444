"""Resumable training checkpoints, written atomically.

A checkpoint is a folder ``step-XXXXXXX`` holding each module's weights as safetensors, the
optimizer state (loaded back with ``weights_only=True``) and ``state.json`` (the step). It is
written under a temporary name and renamed, so a kill never leaves a half-written checkpoint
that a resume would trust.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

_PREFIX = "step-"


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
