"""The run every training stage shares: ``edgefusion train``, ``distill`` and ``lcm``.

A stage brings its models and its objective; what lies around them is the same for all three and
lives here, in the order they run it: check that the output and the run folder stay apart from
the inputs, open the run (accelerator, run folder, the saved config a resume must match), read
the pipeline's training noise schedule, put frozen models on the device in the mixed-precision
dtype, prepare the data, train on the shared loop, write the pipeline with the trained U-Net,
end the run on every process together, and report. So each stage's module reads as its method.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgefusion.train.data import TrainingData, prepare_training_data
from edgefusion.train.ema import EMA
from edgefusion.train.loop import (
    RESUMABLE_KEYS,
    LoopResult,
    LossFn,
    frozen_dtype,
    make_accelerator,
    open_run,
    train,
)
from edgefusion.train.models import check_stage_paths, save_student_pipeline

#: ``save_dtype`` names of the stage configs.
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class StageReport:
    """What a training stage wrote and how the data went."""

    out: Path
    run_dir: Path
    steps: int
    resumed_from: int
    skipped: dict[str, int]
    last_losses: dict[str, float]
    seconds: float


@dataclass
class StageRun:
    """One training stage's open run (:func:`open_stage`): its config (``out``, ``run_dir``,
    ``overwrite``, ``save_dtype``, ``data`` and ``train`` settings, as every stage config has), the
    accelerator, and the dtype of frozen models."""

    config: Any
    run_dir: Path
    out: Path
    accelerator: Any
    dtype: torch.dtype
    started: float

    def noise_schedule(self, pipeline: Path) -> Any:
        """The pipeline's training noise schedule (SD's ``DDPMScheduler`` of its scheduler config)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_pretrained(pipeline, subfolder="scheduler")

    def freeze(self, model: nn.Module) -> nn.Module:
        """``model`` as a model that only predicts: no gradients, eval mode, on the device in the
        mixed-precision dtype (as BK-SDM's script keeps its teacher)."""
        model.requires_grad_(False).eval().to(self.accelerator.device)
        if model.dtype != self.dtype:
            model.to(self.dtype)
        return model

    def student_ema(self, model: nn.Module) -> EMA | None:
        """The EMA of the trained model that the output ships, when ``train.ema_decay`` asks for one."""
        decay = self.config.train.ema_decay
        return EMA(model, decay) if decay is not None else None

    def data(self, pipeline: Path, token_ids: bool = False) -> TrainingData:
        """The stage's training data, encoded by ``pipeline``'s frozen encoders (or their cache)."""
        return prepare_training_data(self.config.data, pipeline, self.accelerator, self.dtype, token_ids)

    def train(
        self,
        model: nn.Module,
        objective: LossFn,
        data: TrainingData,
        ema: EMA | None,
        desc: str,
        lr_by_prefix: dict[str, float] | None = None,
    ) -> LoopResult:
        """Train ``model`` on the shared loop, resuming from the run's newest checkpoint."""
        return train(
            model,
            objective,
            data.dataset,
            self.config.train,
            self.run_dir,
            self.accelerator,
            ema=ema,
            num_workers=self.config.data.num_workers,
            desc=desc,
            lr_by_prefix=lr_by_prefix,
        )

    def finish(
        self,
        model: nn.Module,
        pipeline: Path,
        config_name: str,
        provenance: dict[str, Any],
        result: LoopResult,
        data: TrainingData,
        extra: Callable[[Path], None] | None = None,
    ) -> StageReport:
        """The main process writes ``pipeline`` with ``model`` as its U-Net to ``out`` (provenance
        completed with the steps, seed and skipped samples; ``extra(folder)`` writes a stage's own
        parts into it before it is moved into place), then all processes end the run together."""
        config = self.config

        def write(record: dict[str, Any]) -> None:
            dtype = SAVE_DTYPES[config.save_dtype]
            save_student_pipeline(
                model,
                pipeline,
                self.out,
                dtype,
                {**provenance, **record},
                config,
                config_name,
                config.overwrite,
                extra,
            )

        return self.end(write, result, data)

    def end(
        self, write: Callable[[dict[str, Any]], None], result: LoopResult, data: TrainingData
    ) -> StageReport:
        """End the run: the main process calls ``write`` with what every output records (steps,
        seed, skipped samples) while the others wait, then all processes end the run together."""
        skipped = data.skip_counts(result.skipped_corrupt)
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write({"steps": result.steps, "seed": self.config.train.seed, "skipped_samples": skipped})
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return StageReport(
            out=self.out,
            run_dir=self.run_dir,
            steps=result.steps,
            resumed_from=result.resumed_from,
            skipped=skipped,
            last_losses=result.last_losses,
            seconds=round(time.time() - self.started, 1),
        )


def open_stage(config: Any, inputs: list[str | None], may_change: Sequence[str] = RESUMABLE_KEYS) -> StageRun:
    """Open the run of a stage ``config``: its output must be free (or ``overwrite``) and both it
    and ``run_dir`` apart from ``inputs``; the run folder keeps the config, and a resume must match
    it except for ``may_change`` keys."""
    started = time.time()
    run_dir, out = Path(config.run_dir), Path(config.out)
    check_stage_paths(out, run_dir, config.overwrite, inputs)
    accelerator = make_accelerator(config.train, run_dir)
    open_run(run_dir, config, write=accelerator.is_main_process, may_change=may_change)
    return StageRun(config, run_dir, out, accelerator, frozen_dtype(accelerator), started)
