"""The toy world's stage kind for recipes: ``toy-data``, i.e. ``edgefusion toy data`` as a stage.

A recipe that reproduces a toy result starts from the same toy dataset the stand-alone commands
used (``edgefusion toy data --kind clean --num-prompts 20000 --seed 7``); registering the kind
here keeps the recipe package free of the toy world, as every stage is. The dataset is written
whole or not at all, so an interrupted stage simply starts again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.config import config_from_dict
from edgefusion.errors import EdgefusionError
from edgefusion.recipe.kinds import StageKind
from edgefusion.toy.dataset import KINDS, MAX_SIZE, MIN_SIZE, write_toy_dataset


@dataclass(frozen=True)
class ToyDataConfig:
    """``kind`` (clean or web, default flaw rates), ``num_prompts`` samples of dataset ``seed`` at
    ``size`` pixels: the options of ``edgefusion toy data``."""

    kind: str = "clean"
    num_prompts: int = 1000
    seed: int = 0
    size: int = 64
    out: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EdgefusionError(f"unknown dataset kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.num_prompts < 1:
            raise EdgefusionError(f"num_prompts must be at least 1, got {self.num_prompts}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise EdgefusionError(f"size {self.size} is out of range: use {MIN_SIZE} to {MAX_SIZE} pixels")


def _build(settings: dict[str, Any], folder: Path) -> ToyDataConfig:
    return config_from_dict(ToyDataConfig, {**settings, "out": str(folder / "out")}, what="toy-data setting")


def _run(config: ToyDataConfig) -> Path:
    return write_toy_dataset(
        config.out, config.kind, config.num_prompts, config.seed, config.size, overwrite=True
    )


TOY_DATA = StageKind(
    name="toy-data",
    help="`edgefusion toy data`: a toy shapes dataset (kind, num_prompts, seed, size)",
    build=_build,
    run=_run,
    output=lambda config: Path(config.out),
    placed=("out",),
)
