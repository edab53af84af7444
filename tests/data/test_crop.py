"""Crop: the end crop that holds an off-centre subject beats the centre crop; ties keep the centre."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from edgefusion.data.crop import CropConfig, CropStage, candidate_boxes, choose_crop, edges, load_scorer
from edgefusion.data.dataset import Item


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _canvas(size: tuple[int, int], subject: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((20, 20, 200), subject)
    return image


def test_candidate_boxes_of_wide_and_tall_images():
    assert candidate_boxes(128, 64) == {
        "center": (32, 0, 96, 64),
        "start": (0, 0, 64, 64),
        "end": (64, 0, 128, 64),
    }
    assert candidate_boxes(64, 100)["end"] == (0, 36, 64, 100)


def test_end_crop_chosen_when_the_subject_sits_at_an_end():
    scorer = load_scorer("border_contrast")
    assert choose_crop(_canvas((128, 64), (100, 20, 124, 44)), scorer, 0.01) == ("end", (64, 0, 128, 64))
    assert choose_crop(_canvas((64, 128), (10, 2, 30, 20)), scorer, 0.01) == ("start", (0, 0, 64, 64))
    assert choose_crop(_canvas((128, 64), (50, 20, 78, 44)), scorer, 0.01)[0] == "center"
    assert choose_crop(_canvas((128, 64), (50, 20, 78, 44)), edges, 0.01)[0] == "center"


def test_stage_resizes_to_target_and_keeps_square_bytes():
    stage = CropStage(CropConfig(size=32))
    wide = Item("w", row={"text": "t"}, data=_png(_canvas((200, 100), (150, 40, 190, 60))))
    square_data = _png(_canvas((32, 32), (8, 8, 16, 16)))
    square = Item("s", row={"text": "t"}, data=square_data)
    out_wide, out_square = stage.process([wide, square])
    image = Image.open(io.BytesIO(out_wide.data))
    assert image.size == (32, 32) and out_wide.row["crop_choice"] == "end"
    assert out_wide.row["crop_source_box"] == [100, 0, 200, 100] and out_wide.row["source_size"] == [200, 100]
    assert np.asarray(image)[16, 16].tolist() != [200, 30, 30]  # the subject is in the crop
    assert out_square.data is None and out_square.row["width"] == 32


def brightest_right(image: Image.Image) -> np.ndarray:
    """A custom importance scorer for the test: everything right of the middle matters."""
    weights = np.zeros((image.height, image.width))
    weights[:, image.width // 2 :] = 1.0
    return weights


def test_scorer_is_pluggable_by_module_path():
    scorer = load_scorer(f"{__name__}:brightest_right")
    assert choose_crop(_canvas((128, 64), (0, 0, 10, 10)), scorer, 0.01)[0] == "end"
