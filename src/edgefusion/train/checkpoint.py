"""Resumable training checkpoints, written atomically.

A checkpoint is a folder ``step-XXXXXXX`` holding each module's weights as safetensors, the
optimizer state (loaded back with ``weights_only=True``) and ``state.json`` (the step). It is
written under a temporary name and renamed, so a kill never leaves a half-written checkpoint
that a resume would trust.

Two writers share that layout: :func:`save_checkpoint` for plain single-process loops, and
:func:`save_training_state` for the accelerate loop of the diffusion stages, which stores
accelerate's own state (model, optimizer, RNG; sharded correctly under FSDP) plus the EMA copy.
:func:`pack_run` and :func:`unpack_run` carry such a run, compacted, from one machine to the next.
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

from edgefusion.atomic import atomic_output_dir
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


#: A packed run (:func:`pack_run`): the newest checkpoint's weights and EMA, its optimizer moments
#: (two files, each about a quarter of a checkpoint, so each stays small enough to commit), and the
#: metadata they need besides.
PACKED_WEIGHTS = "weights.safetensors"
PACKED_OPTIMIZER = "optimizer.safetensors"
PACKED_TENSORS = (PACKED_WEIGHTS, PACKED_OPTIMIZER)
PACKED_META = "checkpoint.json"
#: Run files that travel with a packed checkpoint (logs, the config a resume is checked against).
RUN_FILES = ("config.yaml", "losses.csv", "val_curve.csv")
_PACK_FORMAT = 1
_MODEL_FILE = "model.safetensors"
_OPTIMIZER_FILE = "optimizer.bin"


def pack_run(run_dir: Path, dest: Path) -> Path:
    """A compact, resumable copy of a run of the accelerate loop, to carry a long run across
    machines or sessions (for example committed, one leg at a time).

    The newest checkpoint's weights and EMA are stored in float16 and Adam's moments in bfloat16
    (half a checkpoint's size), with the run's config and logs. A run resumed from it
    (:func:`unpack_run`) continues from the rounded values, so it is close to, not bit-identical
    with, an uninterrupted run. Written atomically; an existing ``dest`` is replaced.
    """
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise EdgefusionError(f"{run_dir} holds no checkpoint to pack: train first")
    optimizer = torch.load(checkpoint / _OPTIMIZER_FILE, weights_only=True)
    weights = {f"model/{k}": v.half() for k, v in load_file(str(checkpoint / _MODEL_FILE)).items()}
    if (checkpoint / _EMA_FILE).is_file():
        weights.update({f"ema/{k}": v.half() for k, v in load_file(str(checkpoint / _EMA_FILE)).items()})
    moments = {
        f"optimizer/{index}/{name}": (value if name == "step" else value.to(torch.bfloat16)).contiguous()
        for index, state in optimizer["state"].items()
        for name, value in state.items()
    }
    meta = {
        "format": _PACK_FORMAT,
        "state": json.loads((checkpoint / _STATE_FILE).read_text()),
        "param_groups": optimizer["param_groups"],
    }
    with atomic_output_dir(dest, overwrite=True) as staging:
        save_file(weights, str(staging / PACKED_WEIGHTS))
        save_file(moments, str(staging / PACKED_OPTIMIZER))
        (staging / PACKED_META).write_text(json.dumps(meta, indent=1) + "\n")
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, staging / name)
    return dest


def unpack_run(packed: Path, run_dir: Path) -> Path:
    """Turn a packed run back into ``run_dir`` with one checkpoint, from which re-running the
    stage's command resumes (weights, EMA and Adam's moments upcast to float32). Refuses a run
    folder that already holds checkpoints, so nothing newer is lost."""
    if not all((packed / name).is_file() for name in (PACKED_META, *PACKED_TENSORS)):
        raise EdgefusionError(f"{packed} is not a packed run (no {PACKED_META}): make one with pack")
    meta = json.loads((packed / PACKED_META).read_text())
    if meta.get("format") != _PACK_FORMAT:
        raise EdgefusionError(
            f"{packed} was packed in format {meta.get('format')}; this version reads format {_PACK_FORMAT}"
        )
    checkpoints = run_dir / "checkpoints"
    if latest_checkpoint(checkpoints) is not None:
        raise EdgefusionError(f"{run_dir} already holds checkpoints: unpack into a new run folder")
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}}
    state: dict[int, dict[str, torch.Tensor]] = {}
    stored = {k: v for name in PACKED_TENSORS for k, v in load_file(str(packed / name)).items()}
    for key, value in stored.items():
        kind, _, rest = key.partition("/")
        if kind == "optimizer":
            index, _, name = rest.partition("/")
            state.setdefault(int(index), {})[name] = value.float()
        else:
            parts[kind][rest] = value.float()
    step = meta["state"]["step"]
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (packed / name).is_file():
            shutil.copy2(packed / name, run_dir / name)
    final = checkpoints / f"{_PREFIX}{step:07d}"
    with atomic_output_dir(final) as staging:
        save_file(parts["model"], str(staging / _MODEL_FILE))
        if parts["ema"]:
            save_file(parts["ema"], str(staging / _EMA_FILE))
        torch.save({"state": state, "param_groups": meta["param_groups"]}, staging / _OPTIMIZER_FILE)
        (staging / _STATE_FILE).write_text(json.dumps(meta["state"]))
    return final
