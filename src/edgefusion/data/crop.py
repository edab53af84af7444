"""Stage ``crop``: square crops that keep the subject, resized to the training size.

Training scripts take the centre crop of a non-square image, which cuts subjects standing near
one end. As the paper does, this stage scores three square crops (the centre one and the two at
the ends of the long side) with an importance map and keeps the best one; the centre crop wins
ties, so only a clearly better end crop replaces it. Importance scorers are plain functions
``(image) -> (H, W) array``: ``border_contrast`` (distance of each pixel from the median border
colour: the subject is what differs from the background), ``edges`` (gradient magnitude), or any
``module:function`` with that signature (e.g. a saliency model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgefusion.config import require
from edgefusion.data.config import import_object
from edgefusion.data.dataset import Item
from edgefusion.data.images import DEFAULT_MAX_PIXELS, encode_png, rgb_array
from edgefusion.data.runner import Outcome, RunOptions, read_image, run_dataset_stage

Box = tuple[int, int, int, int]
CHOICES = ("center", "start", "end")


def border_contrast(image: Image.Image) -> np.ndarray:
    """Per-pixel importance: largest channel distance from the median colour of the border."""
    pixels = rgb_array(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.abs(pixels - np.median(border, axis=0)).max(axis=2)


def edges(image: Image.Image) -> np.ndarray:
    """Per-pixel importance: gradient magnitude of the luminance (busy regions hold the subject)."""
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    gy, gx = np.gradient(gray)
    return np.hypot(gx, gy)


SCORERS: dict[str, Callable[[Image.Image], np.ndarray]] = {"border_contrast": border_contrast, "edges": edges}


def load_scorer(name: str) -> Callable[[Image.Image], np.ndarray]:
    """A built-in scorer by name, or ``package.module:function``."""
    return SCORERS[name] if name in SCORERS else import_object(name, "importance scorer")


def candidate_boxes(width: int, height: int) -> dict[str, Box]:
    """The centre square and the squares at the start (left/top) and end of the long side."""
    side = min(width, height)
    offsets = {"center": (max(width, height) - side) // 2, "start": 0, "end": max(width, height) - side}
    if width >= height:
        return {k: (o, 0, o + side, side) for k, o in offsets.items()}
    return {k: (0, o, side, o + side) for k, o in offsets.items()}


def choose_crop(
    image: Image.Image, scorer: Callable[[Image.Image], np.ndarray], margin: float
) -> tuple[str, Box]:
    """The candidate crop holding the most importance; an end crop must beat the centre by ``margin``
    (a fraction of the centre's importance), so near-ties keep the centre."""
    boxes = candidate_boxes(*image.size)
    if image.width == image.height:
        return "center", boxes["center"]
    importance = scorer(image)
    totals = {k: float(importance[b[1] : b[3], b[0] : b[2]].sum()) for k, b in boxes.items()}
    best = max(("start", "end"), key=lambda k: totals[k])
    if totals[best] > totals["center"] * (1 + margin):
        return best, boxes[best]
    return "center", boxes["center"]


@dataclass
class CropConfig:
    """Output side in pixels, importance scorer, and how much better an end crop must be."""

    size: int = 512
    scorer: str = "border_contrast"
    margin: float = 0.01
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        require(8 <= self.size <= 8192, f"size must be 8 .. 8192 px, got {self.size}")
        require(self.margin >= 0, "margin must be >= 0")


@dataclass
class CropStage:
    config: CropConfig
    name: str = "crop"
    writes_images: bool = True

    def process(self, items: list[Item]) -> list[Outcome]:
        scorer = load_scorer(self.config.scorer)
        return [self._crop(item, scorer) for item in items]

    def _crop(self, item: Item, scorer: Callable[[Image.Image], np.ndarray]) -> Outcome:
        read = read_image(item, self.config.max_pixels)
        if isinstance(read, Outcome):
            return read
        image = read[1].image
        choice, box = choose_crop(image, scorer, self.config.margin)
        size = self.config.size
        cropped = image.crop(box)
        if cropped.size != (size, size):
            cropped = cropped.resize((size, size), Image.Resampling.LANCZOS)
        row = {
            **item.row,
            "crop_choice": choice,
            "crop_source_box": list(box),
            "source_size": [image.width, image.height],
            "width": size,
            "height": size,
        }
        if choice == "center" and box == (0, 0, image.width, image.height) and image.width == size:
            return Outcome(item.id, row=row)  # already square at the target size: keep the bytes
        return Outcome(item.id, row=row, data=encode_png(cropped), ext="png")


def crop(
    source: str | Path, out: str | Path, config: CropConfig | None = None, options: RunOptions | None = None
) -> dict[str, Any]:
    """Crop every sample of ``source`` to a ``config.size`` square that keeps its subject."""
    config = config or CropConfig()
    load_scorer(config.scorer)  # fail on a bad scorer name before any work
    return run_dataset_stage(CropStage(config), source, out, options)
