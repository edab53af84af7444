"""The web-scraped toy variant: every flaw label is checked against the pixels, bytes or text it names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgefusion.errors import EdgefusionError
from edgefusion.toy.captions import parse
from edgefusion.toy.dataset import write_toy_dataset
from edgefusion.toy.web import (
    FLAWS,
    WebFlawConfig,
    box_contains,
    center_crop_box,
    clean_sample,
    subject_box,
    web_sample,
    web_samples,
)
from edgefusion.toy.world import Scene, render

SIZE = 64
# Higher rates than the defaults, so that 200 samples hold plenty of every flaw.
DENSE = WebFlawConfig(
    exact_duplicate=0.2,
    near_duplicate=0.2,
    low_resolution=0.3,
    off_center=0.3,
    irrelevant_caption=0.2,
    wrong_caption=0.3,
    jpeg_artifacts=0.3,
)


@pytest.fixture(scope="module")
def web_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("web") / "data"
    return write_toy_dataset(out, kind="web", n=200, seed=3, size=SIZE, web_config=DENSE, progress=False)


@pytest.fixture(scope="module")
def rows(web_dir) -> list[dict]:
    lines = (web_dir / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def with_flaw(rows: list[dict], flaw: str) -> list[dict]:
    return [r for r in rows if flaw in r["flaws"]]


def pixels(folder: Path, name: str, resize_to: int | None = None) -> np.ndarray:
    image = Image.open(folder / name).convert("RGB")
    if resize_to:
        image = image.resize((resize_to, resize_to), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float64)


def high_frequency_energy(image: Image.Image) -> float:
    """Spectral energy above a quarter cycle per pixel, summed over RGB: what blur removes."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float64)
    arr = arr - arr.mean(axis=(0, 1))
    power = (np.abs(np.fft.fft2(arr, axes=(0, 1))) ** 2).sum(axis=2)
    fy = np.abs(np.fft.fftfreq(arr.shape[0]))[:, None]
    fx = np.abs(np.fft.fftfreq(arr.shape[1]))[None, :]
    return float(power[np.maximum(fx, fy) > 0.25].sum())


def stated_attributes(scene: Scene) -> dict[str, str | None]:
    """Flat attribute map of a parsed caption, keyed as the wrong-caption labels name them."""
    attrs: dict[str, str | None] = {"background": scene.background, "relation": scene.relation}
    for i, obj in enumerate(scene.objects):
        attrs.update({f"color/{i}": obj.color, f"shape/{i}": obj.shape})
        attrs.update({f"size/{i}": obj.size, f"position/{i}": obj.position})
    return attrs


def test_every_flaw_occurs_and_flawless_samples_exist(rows):
    for flaw in FLAWS:
        assert len(with_flaw(rows, flaw)) >= 10, flaw
    assert any(r["flaws"] == [] for r in rows)


def test_exact_duplicates_are_byte_identical_copies_of_an_earlier_original(web_dir, rows):
    by_name = {r["file_name"]: r for r in rows}
    for row in with_flaw(rows, "exact_duplicate"):
        original = by_name[row["duplicate_of"]]
        assert original["file_name"] < row["file_name"]
        assert not {"exact_duplicate", "near_duplicate"} & set(original["flaws"])
        assert (web_dir / row["file_name"]).read_bytes() == (web_dir / original["file_name"]).read_bytes()
        assert row["record"] == original["record"]


def test_near_duplicates_look_like_their_original_but_are_not_copies(web_dir, rows):
    unrelated = [r["file_name"] for r in rows if "duplicate" not in " ".join(r["flaws"])]
    for k, row in enumerate(with_flaw(rows, "near_duplicate")):
        copy, original = row["file_name"], row["duplicate_of"]
        assert (web_dir / copy).read_bytes() != (web_dir / original).read_bytes()
        assert "resize_scale" in row or "reencode_quality" in row
        diff = np.abs(pixels(web_dir, copy, 32) - pixels(web_dir, original, 32)).mean()
        other = unrelated[(7 * k + 1) % len(unrelated)]
        other_diff = np.abs(pixels(web_dir, copy, 32) - pixels(web_dir, other, 32)).mean()
        assert diff < 6.0
        assert other == original or diff < other_diff


def test_low_resolution_images_lack_the_high_frequencies_of_a_clean_render(web_dir, rows):
    checked = 0
    for row in with_flaw(rows, "low_resolution"):
        assert max(row["original_size"]) < SIZE
        if row["file_name"].endswith(".png") and row["width"] == row["height"] == SIZE:
            image = Image.open(web_dir / row["file_name"])
            clean = render(Scene.from_dict(row["record"]), SIZE, seed=row["seed"])
            assert high_frequency_energy(image) < 0.35 * high_frequency_energy(clean)
            checked += 1
    assert checked >= 10


def test_off_center_subject_is_inside_the_crop_box_and_cut_by_a_center_crop(web_dir, rows):
    exact_checked = 0
    for row in with_flaw(rows, "off_center"):
        width, height = row["width"], row["height"]
        assert width != height
        crop, subject = row["crop_box"], row["subject_box"]
        assert crop[2] - crop[0] == crop[3] - crop[1] == min(width, height)
        assert row["subject_end"] == ("start" if crop[:2] == [0, 0] else "end")
        assert crop[0] <= subject[0] and crop[1] <= subject[1]
        assert subject[2] <= crop[2] and subject[3] <= crop[3]
        center = center_crop_box(width, height)
        assert not box_contains(center, subject)
        if row["file_name"].endswith(".png") and "near_duplicate" not in row["flaws"]:
            image = Image.open(web_dir / row["file_name"])
            assert (width, height) in ((2 * SIZE, SIZE), (SIZE, 2 * SIZE))
            assert list(subject_box(image)) == subject  # measured from the pixels, not the label
            exact_checked += 1
    assert exact_checked >= 5


def test_irrelevant_captions_describe_nothing_and_keep_the_true_one(rows):
    for row in with_flaw(rows, "irrelevant_caption"):
        assert parse(row["text"]) is None
        assert parse(row["true_caption"]) is not None


def test_wrong_captions_differ_from_the_true_caption_in_exactly_the_named_attribute(rows):
    for row in with_flaw(rows, "wrong_caption"):
        wrong, true = parse(row["text"]), parse(row["true_caption"])
        assert wrong is not None and true is not None
        wrong_attrs, true_attrs = stated_attributes(wrong), stated_attributes(true)
        changed = {key for key in true_attrs if wrong_attrs[key] != true_attrs[key]}
        attribute = row["wrong_attribute"]
        if attribute in ("background", "relation"):
            assert changed == {attribute}
        else:
            assert changed == {f"{attribute}/{row.get('wrong_object', 0)}"}


def test_true_captions_match_the_record(rows):
    for row in rows:
        true_caption = row.get("true_caption", row["text"])
        parsed, record = parse(true_caption), Scene.from_dict(row["record"])
        assert parsed.background == record.background and parsed.relation == record.relation
        for said, truth in zip(parsed.objects, record.objects, strict=True):
            assert (said.color, said.shape) == (truth.color, truth.shape)


def test_file_encoding_matches_extension_and_jpeg_flaw(web_dir, rows):
    for row in rows:
        head = (web_dir / row["file_name"]).read_bytes()[:8]
        is_jpeg = head[:3] == b"\xff\xd8\xff"
        assert is_jpeg == row["file_name"].endswith(".jpg")
        assert is_jpeg or head == b"\x89PNG\r\n\x1a\n"
        if "jpeg_artifacts" in row["flaws"]:
            assert is_jpeg and 5 <= row["jpeg_quality"] <= 20


def test_a_flawless_web_sample_is_the_clean_sample():
    config = WebFlawConfig(**{flaw: 0.0 for flaw in FLAWS})
    for index in range(5):
        web, clean = web_sample(7, index, SIZE, config), clean_sample(7, index, SIZE)
        assert web.flaws == ()
        assert (web.data, web.text, web.file_name) == (clean.data, clean.text, clean.file_name)


def test_a_sample_does_not_depend_on_how_many_are_made():
    short = list(web_samples(30, 5, SIZE, DENSE))
    long = list(web_samples(60, 5, SIZE, DENSE))
    assert [(s.data, s.text, s.flaws) for s in short] == [(s.data, s.text, s.flaws) for s in long[:30]]


def test_observed_rates_are_near_the_configured_ones():
    config, n = WebFlawConfig(), 2000
    counts = dict.fromkeys(FLAWS, 0)
    for sample in web_samples(n, 11, 32, config):
        for flaw in sample.flaws:
            counts[flaw] += 1
    for flaw, rate in config.rates().items():
        tolerance = 4 * np.sqrt(rate * (1 - rate) / n)
        assert abs(counts[flaw] / n - rate) < tolerance, (flaw, counts[flaw] / n, rate)


@pytest.mark.parametrize(
    "settings",
    [
        {"off_center": 1.5},
        {"jpeg_artifacts": -0.1},
        {"wrong_caption": "0.1"},
        {"low_resolution": True},
        {"exact_duplicate": 0.6, "near_duplicate": 0.5},
        {"irrelevant_caption": 0.7, "wrong_caption": 0.4},
        {"low_resolution_scale": (0.5, 1.2)},
        {"jpeg_quality": (20, 5)},
        {"jpeg_quality": (5.0, 20.0)},
    ],
)
def test_bad_settings_are_refused(settings):
    with pytest.raises(EdgefusionError):
        WebFlawConfig(**settings)


def test_config_from_file_and_unknown_keys(tmp_path):
    path = tmp_path / "web.yaml"
    path.write_text("off_center: 0.5\njpeg_quality: [10, 30]\n", encoding="utf-8")
    config = WebFlawConfig.from_file(path)
    assert config.off_center == 0.5 and config.jpeg_quality == (10, 30)
    with pytest.raises(EdgefusionError, match="offcenter"):
        WebFlawConfig.from_dict({"offcenter": 0.5})
    with pytest.raises(EdgefusionError):
        WebFlawConfig.from_file(tmp_path / "missing.yaml")
