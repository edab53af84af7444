"""Decoding untrusted image bytes: every failure becomes a reject reason, never a crash.

Web data holds corrupt files, truncated downloads, CMYK JPEGs, 16-bit PNGs and files whose header
declares billions of pixels (decompression bombs). Stages decode through :func:`decode_image`,
which checks the declared size from the header *before* decoding any pixels, decodes fully (so a
truncated file fails here rather than later in training) and hands back 8-bit RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: PIL's own default limit (about 89 megapixels): larger declared sizes are refused undecoded.
DEFAULT_MAX_PIXELS = 89_478_485
#: Formats whose bytes stages keep as they are; anything else is re-encoded as PNG on ingest.
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_EXIF_ORIENTATION = 0x0112


class ImageRejected(Exception):
    """An image a stage cannot use; the message is the reason written to ``rejects.jsonl``."""


@dataclass
class DecodedImage:
    """An 8-bit RGB image and what its file said about itself."""

    image: Image.Image
    format: str | None
    mode: str  # the file's own mode, before conversion to RGB
    converted: bool  # pixels differ from a plain decode of the file (mode or orientation changed)


def _to_8bit_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, scaling 16/32-bit values instead of clipping them."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "I" or values.max() > 255 else 255.0
        gray = np.clip(np.round(values / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``data`` to 8-bit RGB or raise :class:`ImageRejected` with a one-line reason."""
    if not data:
        raise ImageRejected("undecodable: empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageRejected(f"decompression bomb: {err}") from None
        except UnidentifiedImageError:
            raise ImageRejected("undecodable: not an image file PIL can read") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageRejected(f"undecodable: {err}") from None
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                f"decompression bomb: header declares {width}x{height} = {width * height} pixels "
                f"> max_pixels {max_pixels}"
            )
        if width < 1 or height < 1:
            raise ImageRejected(f"undecodable: empty size {width}x{height}")
        fmt, mode = image.format, image.mode
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            raise ImageRejected(
                "undecodable: PIL is set to load truncated images; unset LOAD_TRUNCATED_IMAGES"
            )
        try:
            image.load()
            rotated = image.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1)
            if rotated:
                image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
            raise ImageRejected(f"undecodable: {err}") from None
    return DecodedImage(_to_8bit_rgb(image), fmt, mode, converted=mode != "RGB" or rotated)


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def normalized_bytes(data: bytes, decoded: DecodedImage) -> tuple[bytes, str]:
    """The bytes and extension a dataset stores: the original file when it already is 8-bit RGB
    in a common format (no generation loss), else a lossless PNG of the converted pixels."""
    if not decoded.converted and decoded.format in KEPT_FORMATS:
        return data, KEPT_FORMATS[decoded.format]
    return encode_png(decoded.image), "png"


def rgb_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3) float64 pixel values in [0, 255]."""
    return np.asarray(image.convert("RGB"), dtype=np.float64)
