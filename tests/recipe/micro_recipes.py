"""Micro recipes for the recipe tests: toy data, then stages that train for a step or two on
16 px images of a micro SD pipeline (each run takes seconds)."""

from __future__ import annotations

from pathlib import Path

import yaml

#: A toy-grammar prompt pair: the toy evaluator (which claims micro models, as they use the toy
#: tokenizer) scores at least two.
PROMPTS = [
    "a large red circle at the left on a blue background",
    "a small yellow star at the top on a black background",
]


def training(steps: int = 2, **train: object) -> dict:
    """The ``data`` and ``train`` settings of a micro training stage (16 px, batch 2)."""
    loop = {"steps": steps, "batch_size": 2, "learning_rate": 1.0e-3, "checkpoint_every": 1, **train}
    return {"data": {"path": "${data.out}", "resolution": 16}, "train": loop}


def micro_recipe(teacher: Path, learning_rate: float = 1.0e-3, extra: list[dict] | None = None) -> str:
    """Toy data -> BK-Tiny KD -> LCM -> W8A16 on the micro teacher, then the ``extra`` stages."""
    stages = [
        {"name": "data", "kind": "toy-data", "config": {"num_prompts": 8, "size": 32, "seed": 3}},
        {
            "name": "distill",
            "kind": "distill",
            "config": {"teacher": "${teacher}", "variant": "tiny", **training(2, ema_decay=0.9)},
            "set": {"train.learning_rate": learning_rate},
        },
        {
            "name": "lcm",
            "kind": "lcm",
            "config": {
                "student": "${distill.out}",
                "teacher": "${teacher}",
                "time_cond_proj_dim": 8,
                **training(2),
            },
        },
        {"name": "quantize", "kind": "quantize", "config": {"model": "${lcm.out}"}},
        *(extra or []),
    ]
    return yaml.safe_dump({"inputs": {"teacher": str(teacher)}, "stages": stages}, sort_keys=False)
