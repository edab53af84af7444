"""The ``bench`` stage: what each model a recipe made costs per component, for its report.

``edgefusion bench`` as a recipe stage: each model (label: model, as a sheet names them) is timed
per component (text encoder, one U-Net call, VAE decoder) on one backend at one size, its total
composed for its own step count (an LCM's 2, a 25-step model's 25, unless ``steps`` names one),
and, unless ``end_to_end`` is off, whole ``generate`` calls in a fresh process beside it. The
records, relabelled by the recipe's labels, go to ``out/bench.json``, which the report shows as
its latency table. The machine's load while the recipe runs is the machine's: time a recipe's
models on a quiet machine (``recipe run --until`` the stage before, then the rest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefusion.atomic import write_text_atomic
from edgefusion.errors import EdgefusionError

BENCH_FILE = "bench.json"


@dataclass(frozen=True)
class BenchStageConfig:
    """``models``: label -> model, in table order; ``steps``: sampling steps by label (default: the
    model kind's); ``resolution``: image side in pixels; ``backend``, ``warmup``, ``repeats``,
    ``threads``, ``end_to_end``: as ``edgefusion bench`` takes them."""

    models: dict[str, str] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    resolution: int = 512
    backend: str = "torch-fp32"
    warmup: int = 1
    repeats: int = 3
    threads: int | None = None
    end_to_end: bool = True
    out: str = ""

    def __post_init__(self) -> None:
        if not self.models:
            raise EdgefusionError("a bench stage needs models (label: model)")
        unknown = sorted(set(self.steps) - set(self.models))
        if unknown:
            raise EdgefusionError(f"steps names {unknown[0]}, which is not one of the bench's models")
        if any(n < 1 for n in self.steps.values()):
            raise EdgefusionError("every steps entry must be at least 1")
        from edgefusion.bench.backends import check_backend

        check_backend(self.backend)


def default_steps(model: str) -> int:
    """The steps ``generate`` samples ``model`` with: an LCM's 2, SD's 25."""
    from edgefusion.inputs import read_json_file
    from edgefusion.pipeline.lcm import is_lcm
    from edgefusion.pipeline.sampling import DEFAULT_STEPS
    from edgefusion.pipeline.sources import resolve_model_path

    config = read_json_file(resolve_model_path(model) / "unet" / "config.json", "U-Net config")
    return DEFAULT_STEPS["lcm" if is_lcm(config) else "other"]


def run_bench(config: BenchStageConfig) -> Path:
    """Time every model and write ``out/bench.json``: the bench records, ``model`` being the label
    (``model_path`` the model), speedups against the first model's total."""
    from edgefusion.bench.latency import BenchConfig, add_speedups, bench

    out = Path(config.out)
    records: list[dict[str, Any]] = []
    for label, model in config.models.items():
        steps = config.steps.get(label) or default_steps(model)
        measured = bench(
            BenchConfig(
                models=[model],
                resolution=config.resolution,
                steps=[steps],
                backends=[config.backend],
                warmup=config.warmup,
                repeats=config.repeats,
                threads=config.threads,
                work_dir=out / "work",
                end_to_end=config.end_to_end,
            )
        )
        records += [{**record, "model": label, "model_path": model} for record in measured]
    add_speedups(records)
    return write_text_atomic(out / BENCH_FILE, json.dumps({"records": records}, indent=2) + "\n")
