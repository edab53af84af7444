"""Filter: size, aspect ratio, JPEG quality estimate, and the upscale detector."""

from __future__ import annotations

import io
import random

import pytest
from made_images import jpeg_bytes, scene_image
from PIL import Image

from edgefusion.data.dataset import Item
from edgefusion.data.filter import FilterConfig, FilterStage, jpeg_quality, upscale_estimate
from edgefusion.toy.web import _render_low_resolution, scene_at
from edgefusion.toy.world import render


def _check(config: FilterConfig, data: bytes) -> str | None:
    return FilterStage(config).process([Item(id="x", data=data, row={"file_name": "x.png"})])[0].reason


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_size_and_aspect_checks():
    wide = _png(scene_image(64).resize((256, 64)))
    assert _check(FilterConfig(), wide).startswith("too small: 256x64, short side < 300")  # the paper's
    assert _check(FilterConfig(min_side=0, max_aspect_ratio=3.0), wide) == "aspect ratio: 4.00 > 3.0"
    assert _check(FilterConfig(min_side=0, max_aspect_ratio=0), wide) is None


@pytest.mark.parametrize("quality", [5, 12, 30, 55, 75, 95])
def test_jpeg_quality_estimate_recovers_the_encoder_setting(quality):
    assert abs(jpeg_quality(jpeg_bytes(scene_image(64), quality)) - quality) <= 1
    assert jpeg_quality(_png(scene_image(64))) is None


def test_heavily_compressed_jpeg_rejected():
    config = FilterConfig(min_side=32, min_jpeg_quality=30)
    assert _check(config, jpeg_bytes(scene_image(64), 10)).startswith("jpeg quality")
    assert _check(config, jpeg_bytes(scene_image(64), 80)) is None


def test_upscale_detector_separates_upscaled_renders_from_sharp_ones():
    config = FilterConfig(min_side=32, detect_upscaling=True)
    for index in range(12):
        scene, seed, _ = scene_at(0, index)
        small = random.Random(index).randint(16, 29)
        upscaled = _render_low_resolution(scene, 64, seed, small)
        native, residual = upscale_estimate(upscaled)
        assert residual < config.upscale_residual and native == small
        assert _check(config, _png(upscaled)).startswith(f"upscaled: from about {small} px")
        assert _check(config, _png(render(scene, 64, seed=seed))) is None
