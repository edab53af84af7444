"""Stage ``caption``: replace each caption by one a captioner writes from the (cropped) pixels.

The paper recaptions after cropping (L-pp -> L-pps), so captions describe what training sees.
The old caption is kept as ``original_text``; images pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.config import require
from edgefusion.data import captioners  # noqa: F401  (registers the built-in captioners)
from edgefusion.data.dataset import Item
from edgefusion.data.images import DEFAULT_MAX_PIXELS
from edgefusion.data.registry import CAPTIONERS, Captioner, built_once
from edgefusion.data.runner import Outcome, RunOptions, read_images, run_dataset_stage


@dataclass
class CaptionConfig:
    """Which captioner (``transformers``, one a world registered such as ``toy``, or
    ``module:factory``) and its model folder."""

    captioner: str = "toy"
    model: str = "toy:evaluator"
    batch_size: int = 64
    keep_original: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size must be at least 1")


@dataclass
class CaptionStage:
    """Recaptions chunks; ``factory`` is the captioner's, looked up where the run starts."""

    config: CaptionConfig
    factory: Callable[[str], Captioner]
    name: str = "caption"
    writes_images: bool = True

    def process(self, items: list[Item]) -> list[Outcome]:
        captioner = built_once(self.factory, self.config.model)
        readable, outcomes = read_images(items, self.config.max_pixels)
        size = self.config.batch_size
        for start in range(0, len(readable), size):
            batch = readable[start : start + size]
            for (item, _), text in zip(batch, captioner([image for _, image in batch]), strict=True):
                row = dict(item.row)
                if self.config.keep_original:
                    row["original_text"] = row.get("text", "")
                row["text"] = text
                row["captioner"] = self.config.captioner
                outcomes[item.id] = Outcome(item.id, row=row)
        return [outcomes[item.id] for item in items]


def caption(
    source: str | Path,
    out: str | Path,
    config: CaptionConfig | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Recaption every sample of ``source`` into ``out``."""
    config = config or CaptionConfig()
    stage = CaptionStage(config, CAPTIONERS.get(config.captioner))
    return run_dataset_stage(stage, source, out, options)
