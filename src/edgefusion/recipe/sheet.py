"""The ``sheet`` stage: the same prompts and seeds through each model a recipe made, side by side.

Numbers say how far a compact or few-step model fell behind; a sheet shows where. Each model
generates every prompt with the same seeds (image ``k`` uses ``seed + k``, whatever the model)
into its own folder (re-runs keep finished images), then one PNG lays the images out in a grid:
a row per model, labelled, and a column per prompt. Sampling follows each model's kind (2 steps
for LCM models, 25 otherwise) unless ``steps`` names a count for its label.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from edgefusion.atomic import atomic_file
from edgefusion.errors import EdgefusionError

SHEET_FILE = "sheet.png"
_LABEL_WIDTH = 120
_CAPTION_HEIGHT = 40


@dataclass(frozen=True)
class SheetConfig:
    """``models``: label -> model (folder, ``toy:NAME`` or ``${STAGE.out}``), in row order;
    ``prompts``: the columns; ``steps``: sampling steps by label (default: the model kind's);
    ``scale``: pixel upscaling of each image in the sheet."""

    models: dict[str, str] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    seed: int = 0
    steps: dict[str, int] = field(default_factory=dict)
    size: int | None = None
    scale: int = 2
    out: str = ""

    def __post_init__(self) -> None:
        if not self.models or not self.prompts:
            raise EdgefusionError("a sheet needs models (label: model) and a list of prompts")
        unknown = sorted(set(self.steps) - set(self.models))
        if unknown:
            raise EdgefusionError(f"steps names {unknown[0]}, which is not one of the sheet's models")
        if self.scale < 1:
            raise EdgefusionError("scale must be at least 1")


def make_sheet(config: SheetConfig) -> Path:
    """Generate each model's images (resuming) and write ``out/sheet.png``; returns its path."""
    from edgefusion.generate import generate

    out = Path(config.out)
    rows = []
    for label, model in config.models.items():
        folder = out / "images" / label
        records = generate(
            config.prompts,
            model,
            out=folder,
            steps=config.steps.get(label),
            seed=config.seed,
            size=config.size,
            progress=False,
        )
        rows.append((label, [Image.open(folder / r["file_name"]).convert("RGB") for r in records]))
    with atomic_file(out / SHEET_FILE) as tmp:
        grid(rows, config.prompts, config.scale).save(tmp, format="PNG")
    return out / SHEET_FILE


def grid(rows: list[tuple[str, list[Image.Image]]], captions: list[str], scale: int) -> Image.Image:
    """Images in rows labelled on the left, columns captioned on top, each upscaled ``scale``x."""
    side = max(image.width for _, images in rows for image in images) * scale
    width = _LABEL_WIDTH + side * len(captions)
    sheet = Image.new("RGB", (width, _CAPTION_HEIGHT + side * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for column, caption in enumerate(captions):
        text = "\n".join(textwrap.wrap(caption, max(8, side // 6))[:3])
        draw.multiline_text((_LABEL_WIDTH + column * side + 2, 2), text, fill="black", spacing=1)
    for row, (label, images) in enumerate(rows):
        y = _CAPTION_HEIGHT + row * side
        draw.multiline_text((4, y + side // 2 - 6), "\n".join(textwrap.wrap(label, 18)[:3]), fill="black")
        for column, image in enumerate(images):
            sheet.paste(
                image.resize((side, side), Image.Resampling.NEAREST), (_LABEL_WIDTH + column * side, y)
            )
    return sheet
