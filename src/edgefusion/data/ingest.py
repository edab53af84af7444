"""Stage ``ingest``: bring a raw dataset into the pipeline's format, refusing what cannot be used.

Every image is decoded in full here (after the header check that refuses decompression bombs
undecoded), so later stages meet only readable 8-bit RGB files; the bytes are kept as they are
when possible, and CMYK, 16-bit, palette or rotated images are stored as lossless PNG.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.config import require
from edgefusion.data.dataset import Item
from edgefusion.data.images import DEFAULT_MAX_PIXELS, normalized_bytes
from edgefusion.data.runner import Outcome, RunOptions, read_image, run_stage
from edgefusion.data.sources import FORMATS, read_source


@dataclass
class IngestConfig:
    """Where captions and paths are in a table, and the largest image accepted (in pixels)."""

    format: str = "auto"
    path_column: str = "path"
    caption_column: str = "caption"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        require(self.format in FORMATS, f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        require(self.max_pixels > 0, "max_pixels must be positive")


@dataclass
class IngestStage:
    config: IngestConfig
    name: str = "ingest"
    writes_images: bool = True

    def process(self, items: list[Item]) -> list[Outcome]:
        return [self._ingest(item) for item in items]

    def _ingest(self, item: Item) -> Outcome:
        read = read_image(item, self.config.max_pixels)
        if isinstance(read, Outcome):
            return read
        data, decoded = read
        stored, ext = normalized_bytes(data, decoded)
        row: dict[str, Any] = {k: v for k, v in item.row.items() if k not in ("width", "height")}
        row.setdefault("text", "")
        row.update(
            width=decoded.image.width,
            height=decoded.image.height,
            source_format=decoded.format,
            source_mode=decoded.mode,
            sha256=hashlib.sha256(stored).hexdigest(),
        )
        return Outcome(item.id, row=row, data=stored, ext=ext)


def ingest(
    source: str | Path, out: str | Path, config: IngestConfig | None = None, options: RunOptions | None = None
) -> dict[str, Any]:
    """Read a raw dataset (image folder, CSV/parquet table, WebDataset tars) into ``out``.

    Sample ids must be unique: a repeated id is rejected rather than overwriting a file.
    """
    config = config or IngestConfig()
    items = read_source(source, config.format, config.path_column, config.caption_column)
    return run_stage(IngestStage(config), items, out, options, source=str(Path(source).resolve()))
