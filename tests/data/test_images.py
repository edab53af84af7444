"""Decoding untrusted bytes: every hostile file becomes a reject reason, good ones 8-bit RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from made_images import bomb_png, hostile_files, png_bytes, scene_image
from PIL import Image

from edgefusion.data.images import ImageRejected, decode_image, normalized_bytes


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt.png", "undecodable"),
        ("random.jpg", "undecodable"),
        ("truncated.jpg", "undecodable"),
        ("empty.png", "undecodable"),
        ("bomb.png", "decompression bomb"),
    ],
)
def test_hostile_bytes_are_rejected_with_a_reason(name, reason):
    with pytest.raises(ImageRejected, match=f"^{reason}"):
        decode_image(hostile_files()[name])


def test_bomb_below_pils_limit_is_refused_from_the_header_before_decoding(monkeypatch):
    """A header declaring more than max_pixels is refused before any pixel is decoded."""
    data = bomb_png(2000, 2000)  # 4 MP: PIL itself would happily try to decode the (missing) data

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(ImageRejected, match="header declares 2000x2000 = 4000000 pixels"):
        decode_image(data, max_pixels=1_000_000)


def test_cmyk_jpeg_becomes_rgb_and_is_stored_as_png():
    decoded = decode_image(hostile_files()["cmyk.jpg"])
    assert decoded.mode == "CMYK" and decoded.image.mode == "RGB" and decoded.converted
    data, ext = normalized_bytes(hostile_files()["cmyk.jpg"], decoded)
    assert ext == "png" and Image.open(io.BytesIO(data)).mode == "RGB"


def test_16_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    decoded = decode_image(buf.getvalue())
    assert decoded.mode.startswith("I")
    assert np.asarray(decoded.image)[0, :, 0].tolist() == [0, 128, 255]


def test_transparent_png_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(png_bytes(rgba)).image.getpixel((0, 0)) == (255, 255, 255)


def test_plain_rgb_files_keep_their_bytes():
    data = png_bytes(scene_image())
    stored, ext = normalized_bytes(data, decode_image(data))
    assert stored == data and ext == "png"
    jpeg = hostile_files()["good2.jpg"]
    assert normalized_bytes(jpeg, decode_image(jpeg)) == (jpeg, "jpg")
