"""Stage ``filter``: drop images too small, too elongated, too compressed, or upscaled.

The paper drops images whose short side is under 300 px. A size check cannot see an image that
was small and then blown up, and web data holds many (thumbnails re-served large; the toy web set
upscales its low-resolution renders to full size). ``detect_upscaling`` finds them: an image
upscaled from ``k`` px lies (up to rounding) in the span of a bicubic upsampling from ``k`` px, so
its residual after projecting onto that span is tiny compared with its contrast, while a sharp
image keeps the detail no smaller image could hold. The search tries every ``k`` up to half the
short side, so it flags upscaling by 2x and more. Heavy JPEG compression erases the same detail
that tells the two apart, so ``min_jpeg_quality`` (estimated from the file's quantization table)
removes those files first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgefusion.config import require
from edgefusion.data.dataset import Item
from edgefusion.data.images import DEFAULT_MAX_PIXELS, rgb_array
from edgefusion.data.runner import Outcome, RunOptions, read_image, run_dataset_stage


@dataclass
class FilterConfig:
    """Thresholds; 0 (or False) switches a check off. ``min_side`` defaults to the paper's 300 px
    short side (BK-SDM and EdgeFusion drop low-resolution images); small-image worlds such as the
    toy one set their own."""

    min_side: int = 300
    max_aspect_ratio: float = 3.0
    min_jpeg_quality: int = 0
    detect_upscaling: bool = False
    #: Projection residual over contrast below which an image counts as upscaled (toy-calibrated).
    upscale_residual: float = 0.045
    #: Largest short side searched exhaustively; larger images are searched on a grid of scales.
    upscale_search_side: int = 128
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        require(self.min_side >= 0, "min_side must be >= 0")
        require(
            self.max_aspect_ratio >= 1 or self.max_aspect_ratio == 0, "max_aspect_ratio must be >= 1 or 0"
        )
        require(0 <= self.min_jpeg_quality <= 100, "min_jpeg_quality must be 0 .. 100")
        require(self.upscale_residual > 0, "upscale_residual must be positive")


# The IJG standard luminance quantization table (JPEG spec, Annex K), in the row-major order PIL
# reports it; a file's table is this one scaled by the encoder's quality setting.
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_IJG_LUMA * scale + 50) / 100), 1, 255)


def jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1-100) whose luminance table best matches the file's; None if not a JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            tables = getattr(image, "quantization", None)
            if image.format != "JPEG" or not tables:
                return None
            luma = np.asarray(tables[min(tables)], dtype=np.float64)
    except (OSError, ValueError, SyntaxError):
        return None
    errors = [np.abs(np.log(_ijg_table(q)) - np.log(luma)).mean() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


def chroma_subsampled(data: bytes) -> bool:
    """Whether ``data`` is a JPEG that stores colour at reduced resolution (4:2:2 or 4:2:0)."""
    from PIL import JpegImagePlugin

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format == "JPEG" and JpegImagePlugin.get_sampling(image) > 0
    except (OSError, ValueError, SyntaxError):
        return False


@lru_cache(maxsize=512)
def _bicubic_projector(n: int, k: int) -> np.ndarray:
    """The (n, n) projector onto signals PIL's bicubic resize can make from ``k`` samples."""
    basis = Image.fromarray(np.eye(k, dtype=np.float32), mode="F")
    upsample = np.asarray(basis.resize((n, k), Image.Resampling.BICUBIC), dtype=np.float64).T
    return upsample @ np.linalg.pinv(upsample)


def upscale_estimate(
    image: Image.Image, search_side: int = 128, luma_only: bool = False
) -> tuple[int, float]:
    """(k, residual): the native short side ``k`` that explains the image best, and how well.

    The residual is the RMS difference between the image and its projection onto bicubic
    upsamplings from ``k`` px (scaled to the aspect ratio), divided by the image's RMS contrast.
    ``luma_only`` measures brightness alone: a JPEG with chroma subsampling stores colour at half
    resolution, so its colour edges are blurred in every file, upscaled or not.
    """
    pixels = rgb_array(image.convert("L").convert("RGB") if luma_only else image)
    height, width = pixels.shape[:2]
    short = min(width, height)
    contrast = float(pixels.std(axis=(0, 1)).mean())
    if short < 16 or contrast < 1e-6:
        return short, float("inf")
    sides = range(8, short // 2 + 1)
    if short > search_side:
        sides = sorted({int(round(short * f)) for f in np.linspace(0.1, 0.5, 41)})
    best = (short, float("inf"))
    for k in sides:
        rows = _bicubic_projector(height, max(2, round(k * height / short)))
        cols = _bicubic_projector(width, max(2, round(k * width / short)))
        residual = np.stack([pixels[..., c] - rows @ pixels[..., c] @ cols.T for c in range(3)])
        score = float(np.sqrt(np.mean(residual**2))) / contrast
        if score < best[1]:
            best = (k, score)
    return best


@dataclass
class FilterStage:
    config: FilterConfig
    name: str = "filter"
    writes_images: bool = True

    def process(self, items: list[Item]) -> list[Outcome]:
        return [self._check(item) for item in items]

    def _check(self, item: Item) -> Outcome:
        config = self.config
        read = read_image(item, config.max_pixels)
        if isinstance(read, Outcome):
            return read
        data, image = read[0], read[1].image
        width, height = image.size
        if min(width, height) < config.min_side:
            return Outcome.rejected(item.id, f"too small: {width}x{height}, short side < {config.min_side}")
        aspect = max(width, height) / min(width, height)
        if config.max_aspect_ratio and aspect > config.max_aspect_ratio:
            return Outcome.rejected(item.id, f"aspect ratio: {aspect:.2f} > {config.max_aspect_ratio}")
        row = dict(item.row)
        if config.min_jpeg_quality:
            quality = jpeg_quality(data)
            if quality is not None and quality < config.min_jpeg_quality:
                return Outcome.rejected(item.id, f"jpeg quality: about {quality} < {config.min_jpeg_quality}")
        if config.detect_upscaling:
            native, residual = upscale_estimate(image, config.upscale_search_side, chroma_subsampled(data))
            if residual < config.upscale_residual:
                details = {"native_side": native, "upscale_residual": round(residual, 5)}
                return Outcome.rejected(
                    item.id, f"upscaled: from about {native} px to {min(width, height)} px", details
                )
        return Outcome(item.id, row=row)


def filter_images(
    source: str | Path, out: str | Path, config: FilterConfig | None = None, options: RunOptions | None = None
) -> dict[str, Any]:
    """Keep the samples of ``source`` that pass every check of ``config``, in ``out``."""
    config = config or FilterConfig()
    return run_dataset_stage(FilterStage(config), source, out, options)
