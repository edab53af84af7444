"""``edgefusion demo``: generate a few images with a shipped toy model, no download needed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

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
    out: Path, model: str = "toy:teacher", steps: int = 25, guidance: float = 7.5, seed: int = 0
) -> Path:
    """Generate the demo prompts; write one PNG each (metadata in text chunks) and a contact sheet."""
    from edgefusion.pipeline.load import load_pipeline
    from edgefusion.pipeline.sampling import generate_tensors
    from edgefusion.toy.samples import tensor_to_images

    pipe = load_pipeline(model)
    seeds = [seed + i for i in range(len(DEMO_PROMPTS))]
    images = tensor_to_images(generate_tensors(pipe, DEMO_PROMPTS, seeds, steps, guidance) * 2 - 1)
    out.mkdir(parents=True, exist_ok=True)
    log = []
    for i, (img, prompt, s) in enumerate(zip(images, DEMO_PROMPTS, seeds, strict=True)):
        meta = {
            "prompt": prompt,
            "seed": s,
            "steps": steps,
            "guidance": guidance,
            "model": model,
            "scheduler": type(pipe.scheduler).__name__,
        }
        info = PngInfo()
        for k, v in meta.items():
            info.add_text(k, str(v))
        tmp = out / f".{i:02d}.png.tmp"
        img.save(tmp, format="PNG", pnginfo=info)
        tmp.replace(out / f"{i:02d}.png")
        log.append(json.dumps({"file_name": f"{i:02d}.png", **meta}))
    (out / "images.jsonl").write_text("\n".join(log) + "\n")
    sheet = out / "contact_sheet.png"
    contact_sheet(images, DEMO_PROMPTS).save(sheet)
    return sheet
