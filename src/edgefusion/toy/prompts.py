"""The fixed prompt sets of the toy world: ``eval_prompts.txt`` (600, the reported numbers) and
``val_prompts.txt`` (200, disjoint from it, for choosing checkpoints and settings, so that no
choice is tuned on the set the results are reported on).

Canonical phrasings only, so every prompt parses exactly; one fifth of the one-shape prompts and
some two-shape prompts use colour-shape combinations held out of all training data.
"""

from __future__ import annotations

import random
from pathlib import Path

from edgefusion.errors import EdgefusionError
from edgefusion.eval.prompts import prompt_file
from edgefusion.inputs import read_text_file
from edgefusion.limits import check_limit
from edgefusion.toy.captions import canonical_caption
from edgefusion.toy.world import HELD_OUT_COMBOS, POSITIONS, SIZES, Scene, ShapeObject, sample_scene

EVAL_PROMPTS_PATH = Path(__file__).parent / "eval_prompts.txt"
VAL_PROMPTS_PATH = Path(__file__).parent / "val_prompts.txt"


def _held_out_single(rng: random.Random) -> Scene:
    color, shape = rng.choice(sorted(HELD_OUT_COMBOS))
    background = rng.choice([c for c in ("red", "blue", "yellow", "white", "black") if c != color])
    return Scene((ShapeObject(shape, color, rng.choice(SIZES), rng.choice(POSITIONS)),), background)


def make_eval_prompts(
    n_single: int = 360, n_pair: int = 240, seed: int = 2024, exclude: frozenset[str] = frozenset()
) -> list[str]:
    """One-shape prompts (most with a position), then two-shape prompts; none of ``exclude``."""
    rng = random.Random(seed)
    prompts: list[str] = []
    while len(prompts) < n_single:
        i = len(prompts)
        scene = _held_out_single(rng) if i % 5 == 0 else sample_scene(rng, p_two_objects=0.0)
        text = canonical_caption(scene, with_position=i % 4 != 3)
        if text not in prompts and text not in exclude:
            prompts.append(text)
    while len(prompts) < n_single + n_pair:
        scene = sample_scene(rng, p_two_objects=1.0, allow_held_out=True)
        if scene.has_held_out_combo() and rng.random() > 0.25:
            continue  # keep held-out pairs at a minority, as for one-shape prompts
        text = canonical_caption(scene)
        if text not in prompts and text not in exclude:
            prompts.append(text)
    return prompts


def make_val_prompts() -> list[str]:
    """The validation set: the eval set's recipe at a third of its size, another seed, disjoint."""
    return make_eval_prompts(120, 80, seed=7, exclude=frozenset(make_eval_prompts()))


def load_prompts(path: str | Path = EVAL_PROMPTS_PATH, limit: int | None = None) -> list[str]:
    """The first ``limit`` (default: all) prompts of a text file, one per line (blank lines and
    ``#`` comments skipped), or of a named prompt set: ``eval`` and ``val`` are the shipped sets,
    registered with every other command's ``--prompts`` (``toy/plugins.py``), so the one lookup of
    ``edgefusion.eval.prompts`` resolves them here too. A missing, binary or empty file is an error."""
    check_limit(limit)
    path = prompt_file(path)
    lines = read_text_file(path, "prompt file").splitlines()
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise EdgefusionError(f"prompt file {path} holds no prompts")
    return prompts[:limit]
