"""Attribute labels of a scene for the classifier, and the scoring of a prompt against them.

The classifier sees objects in reading order (left or top first). A prompt "a red circle right of
a blue star" therefore expects the blue star as object 1. Attributes a prompt leaves out (size or
position of a single shape) are not scored.
"""

from __future__ import annotations

import torch

from edgefusion.toy.models import CLASSIFIER_HEADS
from edgefusion.toy.world import COLORS, LAYOUTS, POSITIONS, SHAPES, SIZES, Scene

IGNORE = -100


def scene_labels(scene: Scene) -> dict[str, int]:
    """Class index per classifier head; IGNORE where the head does not apply or is unstated."""
    first = scene.ordered_objects()[0]
    labels = {
        "background": COLORS.index(scene.background) if scene.background else IGNORE,
        "layout": LAYOUTS.index(scene.layout),
        "shape_1": SHAPES.index(first.shape),
        "color_1": COLORS.index(first.color),
        "size": SIZES.index(first.size) if first.size else IGNORE,
        "position": POSITIONS.index(first.position) if first.position else IGNORE,
        "shape_2": IGNORE,
        "color_2": IGNORE,
    }
    if scene.layout != "single":
        second = scene.ordered_objects()[1]
        labels["shape_2"] = SHAPES.index(second.shape)
        labels["color_2"] = COLORS.index(second.color)
    return labels


def batch_labels(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    rows = [scene_labels(s) for s in scenes]
    return {name: torch.tensor([r[name] for r in rows]) for name, _ in CLASSIFIER_HEADS}


# Reported attribute -> the heads that must all be right for it.
_ATTRIBUTE_HEADS = {
    "shape": ("shape_1", "shape_2"),
    "color": ("color_1", "color_2"),
    "size": ("size",),
    "position": ("position",),
    "relation": ("layout",),
    "background": ("background",),
}


def score_predictions(prompts: list[Scene], predicted: dict[str, torch.Tensor]) -> list[dict[str, bool]]:
    """Per image, whether each attribute the prompt states was generated correctly.

    ``predicted`` holds the classifier's class indices per head. A single-shape prompt also
    requires a single-shape image (layout), folded into ``relation`` only for two-shape prompts
    and into every object attribute for one-shape prompts, so two shapes never pass as one.
    """
    results = []
    for i, scene in enumerate(prompts):
        want = scene_labels(scene)
        got = {name: int(predicted[name][i]) for name in want}
        layout_ok = got["layout"] == want["layout"]
        row = {}
        for attribute, heads in _ATTRIBUTE_HEADS.items():
            if attribute == "relation" and scene.layout == "single":
                continue
            stated = [h for h in heads if want[h] != IGNORE]
            if not stated:
                continue
            ok = all(got[h] == want[h] for h in stated)
            if attribute != "background":
                ok = ok and layout_ok
            row[attribute] = ok
        results.append(row)
    return results
