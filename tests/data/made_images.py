"""Made images for the data-curation tests, hostile ones included (imported by name; conftest.py
holds only fixtures, because several test folders have a conftest module)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def scene_image(size: int = 64, seed: int = 0) -> Image.Image:
    """A small picture with structure (a gradient and a disc), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, size * 0.2
    base = rng.uniform(30, 220, size=3)
    pixels = np.zeros((size, size, 3))
    pixels[:] = base
    pixels[..., 0] += xx * 0.5
    pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, size=3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    data = png_bytes(Image.new("RGB", (4, 4), (1, 2, 3)))
    ihdr = data[8 + 8 : 8 + 8 + 13]
    patched = struct.pack(">II", width, height) + ihdr[8:]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + patched) & 0xFFFFFFFF)
    return data[:16] + patched + crc + data[16 + 13 + 4 :]


def hostile_files() -> dict[str, bytes]:
    """File name -> bytes of every kind of bad file web data holds, plus two good ones."""
    good = scene_image(64, 1)
    jpeg = jpeg_bytes(scene_image(64, 2))
    cmyk = io.BytesIO()
    scene_image(64, 3).convert("CMYK").save(cmyk, format="JPEG", quality=90)
    sixteen = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(sixteen, format="PNG")
    return {
        "good.png": png_bytes(good),
        "good2.jpg": jpeg,
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(200)),
        "random.jpg": bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "cmyk.jpg": cmyk.getvalue(),
        "sixteen.png": sixteen.getvalue(),
        "bomb.png": bomb_png(),
        "empty.png": b"",
    }
