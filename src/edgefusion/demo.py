"""``edgefusion demo``: generate a few images with a shipped toy model, no download needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

DEMO_PROMPTS = [
    "a large red circle at the left on a blue background",
    "a small yellow star at the top on a black background",
    "a large white square at the center on a green background",
    "a large purple triangle at the right on a yellow background",
    "a small green cross at the bottom on a white background",
    "a large orange circle at the center on a purple background",
    "a red square left of a blue circle on a white background",
    "a yellow star above a green square on a black background",
]


def contact_sheet(
    images: list[Image.Image], captions: list[str], scale: int = 3, cols: int = 4
) -> Image.Image:
    """A grid of upscaled images, each with its caption wrapped underneath."""
    w, h = images[0].width * scale, images[0].height * scale
    text_h = 40
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * (h + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % cols) * w, (i // cols) * (h + text_h)
        sheet.paste(img.resize((w, h), Image.Resampling.NEAREST), (x, y))
        draw.multiline_text(
            (x + 3, y + h + 2), "\n".join(textwrap.wrap(cap, 30)[:3]), fill="black", spacing=1
        )
    return sheet


def run_demo(
    out: Path,
    model: str = "toy:edgefusion",
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
) -> Path:
    """Generate the demo prompts with :func:`edgefusion.generate.generate` (one PNG each, settings
    in text chunks and ``generations.jsonl``) and write a contact sheet of them."""
    from edgefusion.generate import generate

    records = generate(
        DEMO_PROMPTS, model, out=out, steps=steps, guidance=guidance, seed=seed, progress=False
    )
    images = [Image.open(out / r["file_name"]).convert("RGB") for r in records]
    sheet = out / "contact_sheet.png"
    tmp = out / ".contact_sheet.png.tmp"
    contact_sheet(images, DEMO_PROMPTS).save(tmp, format="PNG")
    tmp.replace(sheet)
    return sheet
