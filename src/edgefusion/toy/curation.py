"""What the toy world gives the data-curation stages: a captioner, a prompt grammar, a renderer and
a curation scorer, each exact because every toy image's attributes are known.

:mod:`edgefusion.toy.plugins` registers them in :mod:`edgefusion.data.registry` under ``toy``
(``toy:render`` for the renderer), so ``data caption``, ``data synthesize`` and ``data curate``
use them by name without importing this world:

- :func:`toy_captioner`: the evaluator's attribute classifier read back into a canonical caption,
  the toy world's stand-in for a captioning model such as Sphinx in the paper;
- :func:`toy_prompts`: canonical captions of scenes whose attributes are balanced, as the paper
  balances the attributes of its synthetic prompts;
- :func:`render_with_records`: exact renders of toy prompts, each with its scene as the record
  that ``data score`` checks captions against;
- :func:`toy_scorer`: toy CLIP score of each image and caption, and whether the caption states
  what the classifier reads from the image.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from edgefusion.data.prompts import Deck
from edgefusion.data.registry import Captioner, Scorer
from edgefusion.toy.attributes import IGNORE, scene_labels
from edgefusion.toy.captions import canonical_caption, parse
from edgefusion.toy.world import (
    COLORS,
    HELD_OUT_COMBOS,
    LAYOUTS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    render,
)


def scene_from_predictions(predicted: dict[str, int]) -> Scene:
    """The scene the classifier heads describe; two shapes are stated left/top object first."""
    background = COLORS[predicted["background"]]
    first = ShapeObject(SHAPES[predicted["shape_1"]], COLORS[predicted["color_1"]])
    layout = LAYOUTS[predicted["layout"]]
    if layout == "single":
        obj = ShapeObject(
            first.shape, first.color, SIZES[predicted["size"]], POSITIONS[predicted["position"]]
        )
        return Scene((obj,), background)
    second = ShapeObject(SHAPES[predicted["shape_2"]], COLORS[predicted["color_2"]])
    return Scene((first, second), background, "left of" if layout == "horizontal" else "above")


def caption_agrees(text: str, record: dict[str, Any]) -> bool:
    """Whether every attribute ``text`` states is true of the scene ``record`` (and it states one)."""
    stated = parse(text or "")
    if stated is None:
        return False
    want = scene_labels(Scene.from_dict(record))
    got = scene_labels(stated)
    return all(got[head] == want[head] for head in got if got[head] != IGNORE)


def images_to_unit_tensor(images: list[Image.Image], side: int) -> torch.Tensor:
    """PIL images -> float (N, 3, side, side) in [0, 1], the evaluator's input."""
    resized = [im.convert("RGB").resize((side, side), Image.Resampling.BICUBIC) for im in images]
    array = np.stack([np.asarray(im, dtype=np.float32) for im in resized]) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def _read_scenes(evaluator: Any, batch: torch.Tensor) -> list[Scene]:
    """The scene the classifier reads from each image of ``batch``."""
    predicted = evaluator.predict(batch)
    rows = [{head: int(values[i]) for head, values in predicted.items()} for i in range(len(batch))]
    return [scene_from_predictions(row) for row in rows]


def toy_captioner(model: str = "toy:evaluator") -> Captioner:
    """Caption toy images with the evaluator's classifier: every attribute it reads, canonically."""
    from edgefusion.toy.metrics import ToyEvaluator

    evaluator = ToyEvaluator(model)

    def caption_images(images: list[Image.Image]) -> list[str]:
        batch = images_to_unit_tensor(images, evaluator.image_size)
        return [canonical_caption(scene) for scene in _read_scenes(evaluator, batch)]

    return caption_images


def toy_scorer(evaluator: str = "toy:evaluator") -> Scorer:
    """Toy CLIP score of each (image, caption) and whether the caption states what the classifier
    reads from the image."""
    from edgefusion.toy.metrics import ToyEvaluator

    model = ToyEvaluator(evaluator)

    def score(images: list[Any], texts: list[str]) -> list[dict[str, Any]]:
        batch = images_to_unit_tensor(images, model.image_size)
        clip = model.clip_scores(batch, texts).tolist()
        seen = _read_scenes(model, batch)
        return [
            {"clip_score": round(clip[i], 5), "attributes_ok": caption_agrees(text, seen[i].to_dict())}
            for i, text in enumerate(texts)
        ]

    return score


def balanced_toy_scenes(n: int, seed: int) -> Iterator[Scene]:
    """Toy scenes whose backgrounds, shapes, colours, layouts, sizes and positions are balanced.

    Object colours avoid the background, and held-out colour-shape pairs never occur (they must
    stay out of all training data).
    """
    rng = random.Random(f"edgefusion.data/toy-prompts/{seed}")
    decks = {
        name: Deck(values, rng)
        for name, values in {
            "layout": ("single", "pair"),
            "background": COLORS,
            "shape": SHAPES,
            "color": COLORS,
            "size": SIZES,
            "position": POSITIONS,
            "relation": RELATIONS,
        }.items()
    }

    def draw_object(background: str) -> tuple[str, str]:
        shape = decks["shape"].draw()
        color = decks["color"].draw(lambda c: c != background and (c, shape) not in HELD_OUT_COMBOS)
        return shape, color

    for _ in range(n):
        background = decks["background"].draw()
        if decks["layout"].draw() == "single":
            shape, color = draw_object(background)
            obj = ShapeObject(shape, color, decks["size"].draw(), decks["position"].draw())
            yield Scene((obj,), background)
        else:
            pair = tuple(ShapeObject(*draw_object(background)) for _ in range(2))
            yield Scene(pair, background, decks["relation"].draw())


def toy_prompts(n: int, seed: int) -> list[str]:
    """Canonical captions of balanced toy scenes (every one parses back exactly)."""
    return [canonical_caption(scene) for scene in balanced_toy_scenes(n, seed)]


def render_with_records(
    prompts: list[str], seeds: list[int], size: int
) -> list[tuple[Image.Image, dict[str, Any]]]:
    """Exact renders of toy prompts, with the completed scene as the attribute record."""
    from edgefusion.toy.metrics import complete_scene, parse_prompts

    images = []
    for scene, seed in zip(parse_prompts(prompts), seeds, strict=True):
        full = complete_scene(scene, random.Random(seed))
        images.append((render(full, size, seed=seed), full.to_dict()))
    return images
