"""The fixed evaluation prompt set of the toy world (shipped as ``eval_prompts.txt``).

Canonical phrasings only, so every prompt parses exactly; one fifth of the one-shape prompts and
some two-shape prompts use colour-shape combinations held out of all training data.
"""

from __future__ import annotations

import random
from pathlib import Path

from edgefusion.toy.captions import canonical_caption
from edgefusion.toy.world import HELD_OUT_COMBOS, POSITIONS, SIZES, Scene, ShapeObject, sample_scene

EVAL_PROMPTS_PATH = Path(__file__).parent / "eval_prompts.txt"


def _held_out_single(rng: random.Random) -> Scene:
    color, shape = rng.choice(sorted(HELD_OUT_COMBOS))
    background = rng.choice([c for c in ("red", "blue", "yellow", "white", "black") if c != color])
    return Scene((ShapeObject(shape, color, rng.choice(SIZES), rng.choice(POSITIONS)),), background)


def make_eval_prompts(n_single: int = 360, n_pair: int = 240, seed: int = 2024) -> list[str]:
    """One-shape prompts (most with a position), then two-shape prompts."""
    rng = random.Random(seed)
    prompts: list[str] = []
    while len(prompts) < n_single:
        i = len(prompts)
        scene = _held_out_single(rng) if i % 5 == 0 else sample_scene(rng, p_two_objects=0.0)
        text = canonical_caption(scene, with_position=i % 4 != 3)
        if text not in prompts:
            prompts.append(text)
    while len(prompts) < n_single + n_pair:
        scene = sample_scene(rng, p_two_objects=1.0, allow_held_out=True)
        if scene.has_held_out_combo() and rng.random() > 0.25:
            continue  # keep held-out pairs at a minority, as for one-shape prompts
        text = canonical_caption(scene)
        if text not in prompts:
            prompts.append(text)
    return prompts


def load_prompts(path: str | Path = EVAL_PROMPTS_PATH) -> list[str]:
    """Prompts of a text file, one per line (blank lines and ``#`` comments skipped)."""
    lines = Path(path).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
