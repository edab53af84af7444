"""Validation curve of a training run: score its EMA checkpoints on toy prompts as it trains.

    python scripts/score-checkpoints.py --config configs/toy/teacher.yaml --every 1000 --watch

Each checkpoint whose step is a multiple of --every (and not scored yet) becomes a pipeline (the
run's pipeline with the checkpoint's EMA U-Net) and is scored with ``edgefusion toy eval``'s
code on the given prompts; one row per checkpoint and guidance scale is appended to
``RUN_DIR/val_curve.csv`` with the samples seen so far. With --watch it polls until the run's
last step is scored. With --pause-pid the training process is stopped (SIGSTOP) while a
checkpoint is scored and continued (SIGCONT) after: on 2 cores, two jobs that each want both cores
slow each other down far more than taking turns does.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file
from transformers import CLIPTextModel

from edgefusion.arch.compression import copy_pipeline_without_unet
from edgefusion.toy.metrics import evaluate_toy_model
from edgefusion.toy.position_probe import measure_position_control
from edgefusion.toy.prompts import load_prompts
from edgefusion.train.config import load_config
from edgefusion.train.denoise import DenoiseConfig, TextConditionedUNet, initial_unet
from edgefusion.train.models import pipeline_folder

FIELDS = ("step", "samples", "guidance", "one_object", "two_object", "held_out", "all", "clip", "fid")
#: Per-attribute accuracy on the 1-object prompts: which attribute a curve is stuck on.
ATTRIBUTES = ("background", "color", "size", "position", "shape")
#: With --position: whether the first sampling step takes an object's side from the caption.
POSITION_FIELDS = ("named_side", "noise_decides")


def scored_steps(curve: Path) -> set[tuple[int, float]]:
    if not curve.is_file():
        return set()
    with curve.open(newline="") as f:
        return {(int(r["step"]), float(r["guidance"])) for r in csv.DictReader(f)}


def append_row(curve: Path, row: dict) -> None:
    """Append ``row`` to the curve; a curve written before some columns existed is rewritten with
    them (its old rows left blank there)."""
    fields = FIELDS + ATTRIBUTES + POSITION_FIELDS
    header: tuple[str, ...] = ()
    rows: list[dict] = []
    if curve.is_file():
        with curve.open(newline="") as f:
            reader = csv.DictReader(f)
            header, rows = tuple(reader.fieldnames or ()), list(reader)
    if header != fields:
        with curve.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
    with curve.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields, restval="").writerow(row)


@contextlib.contextmanager
def checkpoint_pipeline(config: DenoiseConfig, checkpoint: Path):
    """A temporary pipeline folder: the run's pipeline with the checkpoint's EMA weights."""
    ema = checkpoint / "ema.safetensors"
    if not ema.is_file():
        raise FileNotFoundError(ema)
    weights = load_file(str(ema))
    unet = initial_unet(config)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipe"
        folder.mkdir()
        copy_pipeline_without_unet(pipeline_folder(config.pipeline), folder)
        if config.text_encoder_lr is not None or config.text_encoder:  # the EMA holds both models
            model = TextConditionedUNet(unet, CLIPTextModel.from_pretrained(folder / "text_encoder"))
            model.load_state_dict(weights)
            shutil.rmtree(folder / "text_encoder")
            model.text_encoder.save_pretrained(folder / "text_encoder")
        else:
            unet.load_state_dict(weights)
        unet.save_pretrained(folder / "unet")
        yield folder


def score_checkpoint(
    config: DenoiseConfig, checkpoint: Path, prompts: list[str], guidance: float, position: bool
) -> dict:
    """Toy metrics of the checkpoint's EMA weights at 25 steps and ``guidance``; with ``position``,
    also whether its first sampling step takes the side from the caption."""
    with checkpoint_pipeline(config, checkpoint) as folder:
        result = evaluate_toy_model(str(folder), prompts, steps=25, guidance=guidance)
        if position:
            result["position_control"] = measure_position_control(str(folder), noises=8)
        return result


@contextlib.contextmanager
def paused(pid: int | None):
    """Stop process ``pid`` for the duration of the block (nothing when None)."""
    if pid is None:
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the run's DenoiseConfig file")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides the run was started with")
    parser.add_argument("--every", type=int, default=1000, help="score checkpoints at multiples of this")
    parser.add_argument("--prompts", default="val", help="a prompt file, or the shipped set val/eval")
    parser.add_argument("--guidance", type=float, nargs="+", default=[2.0])
    parser.add_argument("--watch", action="store_true", help="keep polling for new checkpoints")
    parser.add_argument(
        "--position", action="store_true", help="also measure whether the caption sets the side"
    )
    parser.add_argument("--pause-pid", type=int, help="the training process to pause while scoring")
    args = parser.parse_args()

    config = load_config(DenoiseConfig, args.config, args.overrides)
    run_dir = Path(config.run_dir)
    curve = run_dir / "val_curve.csv"
    prompts = load_prompts(args.prompts)
    samples_per_step = config.train.batch_size * config.train.gradient_accumulation
    while True:
        done = scored_steps(curve)
        checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
        todo = [
            (c, g)
            for c in checkpoints
            for g in args.guidance
            if int(c.name[5:]) % args.every == 0 and (int(c.name[5:]), g) not in done
        ]
        for checkpoint, guidance in todo:
            step = int(checkpoint.name[5:])
            try:
                with paused(args.pause_pid):
                    result = score_checkpoint(config, checkpoint, prompts, guidance, args.position)
            except FileNotFoundError as err:  # the run rotated this checkpoint out while it was read
                print(f"skipped {checkpoint.name}: {err}", flush=True)
                continue
            row = {
                "step": step,
                "samples": step * samples_per_step,
                "guidance": guidance,
                "one_object": round(result["one_object"]["accuracy_all"], 4),
                "two_object": round(result["two_object"]["accuracy_all"], 4),
                "held_out": round(result["held_out"].get("accuracy_all", float("nan")), 4),
                "all": round(result["accuracy_all"], 4),
                "clip": round(result["clip_score"], 4),
                "fid": round(result["fid"], 2),
            }
            per_attribute = result["one_object"]["accuracy"]
            row.update({a: round(per_attribute[a], 4) for a in ATTRIBUTES})
            if args.position:
                control = result["position_control"]
                row.update(named_side=control["named_side"], noise_decides=control["noise_decides"])
            append_row(curve, row)
            print(row, flush=True)
        finished = any(int(c.name[5:]) >= config.train.steps for c in checkpoints)
        if not args.watch or finished:
            return
        time.sleep(60)


if __name__ == "__main__":
    main()
