"""The toy personalization subject: the 6-pointed star option leaves every existing render as it
was, the identifier has tokens no caption uses, the context prompts are the caption grammar's, the
shipped detector tells the subject from other stars and shapes, and the subject metrics score
renders as they should."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgefusion.toy.captions import canonical_caption, parse, training_corpus
from edgefusion.toy.samples import images_to_tensor
from edgefusion.toy.subject import (
    IDENTIFIER,
    INSTANCE_CONTEXTS,
    SUBJECT,
    SUBJECT_COLOR,
    SUBJECT_POINTS,
    context_prompts,
    instance_images,
    score_subject,
    write_instance_images,
)
from edgefusion.toy.subject_detector import (
    DETECTOR_DIR,
    METRICS_FILE,
    detected,
    detector_batch,
    generated_prompts,
    load_detector,
    train_detector,
)
from edgefusion.toy.tokenizer import load_toy_tokenizer
from edgefusion.toy.world import Scene, ShapeObject, render, sample_scene


def test_existing_renders_are_byte_identical_and_six_points_change_only_the_star() -> None:
    rng = random.Random(11)
    digest = hashlib.sha256()
    for i in range(40):
        scene = sample_scene(rng, p_two_objects=0.4, allow_held_out=True)
        digest.update(np.asarray(render(scene, 64, seed=i)).tobytes())
    # The renderer's pixels before the star_points option existed (same scenes, same seeds).
    assert digest.hexdigest() == "2f6434b9707a6f2bfb7fd494ea26aad5bf4d36f69e81fd69c514c48d91d901a8"
    circle = Scene((ShapeObject("circle", "red", "large", "left"),), "blue")
    six_points = render(circle, 64, seed=2, star_points=6)
    assert np.array_equal(np.asarray(render(circle, 64, seed=2)), np.asarray(six_points))
    star = Scene((ShapeObject("star", "yellow", "large", "center"),), "blue")
    five = np.asarray(render(star, 64, seed=1)).astype(int)
    six = np.asarray(render(star, 64, seed=1, star_points=SUBJECT_POINTS)).astype(int)
    changed = np.abs(six - five).sum(-1) > 30
    assert 20 < changed.sum() < 400
    ys, xs = np.nonzero(changed)
    assert abs(xs.mean() - 32) < 5 and abs(ys.mean() - 32) < 6  # on the star, nowhere else
    assert np.array_equal(six[0], five[0]) and np.array_equal(six[:, 0], five[:, 0])
    with pytest.raises(ValueError, match="at least 3 points"):
        render(star, 64, star_points=2)


def test_the_identifier_uses_tokens_no_caption_uses_and_captions_tokenize_as_before() -> None:
    tokenizer = load_toy_tokenizer()
    used = {i for text in training_corpus(3000) for i in tokenizer(text).input_ids}
    ids = tokenizer(IDENTIFIER).input_ids[1:-1]
    assert ids and not set(ids) & used
    star = tokenizer("a star").input_ids
    assert tokenizer(f"a {IDENTIFIER} star").input_ids == [*star[:2], *ids, *star[2:]]


def test_instance_images_show_one_subject_in_varied_contexts(tmp_path) -> None:
    images = instance_images(64)
    assert len(images) == len(INSTANCE_CONTEXTS) == 5
    assert len({c[1] for c in INSTANCE_CONTEXTS}) == 5 and len({c[2] for c in INSTANCE_CONTEXTS}) == 5
    assert sum(c[0] == "large" for c in INSTANCE_CONTEXTS) >= 4
    assert all(c[2] not in (SUBJECT_COLOR, "orange", "white") for c in INSTANCE_CONTEXTS)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, instance_images(64), strict=True)
    )
    files = write_instance_images(tmp_path / "inst", 32)
    assert [f.name for f in files] == sorted(f.name for f in (tmp_path / "inst").glob("*.png"))
    record = json.loads((tmp_path / "inst" / "subject.json").read_text())
    assert record["instance_prompt"] == "a sks star" and record["class_prompt"] == "a star"
    assert record["subject"] == {"shape": "star", "color": SUBJECT_COLOR, "points": SUBJECT_POINTS}
    # Each image's caption names its context, as the context prompts do.
    size, position, background = INSTANCE_CONTEXTS[1]
    caption = files[1].with_suffix(".txt").read_text().strip()
    assert caption == f"a {size} sks star at the {position} on a {background} background"
    with pytest.raises(Exception, match="already exists"):
        write_instance_images(tmp_path / "inst", 32)


def test_context_prompts_are_the_caption_grammar_with_the_identifier_for_the_colour() -> None:
    prompts = context_prompts()
    assert len(prompts) == 35 and len({text for text, _ in prompts}) == 35
    for text, scene in prompts:
        assert IDENTIFIER in text.split()
        assert parse(text.replace(IDENTIFIER, SUBJECT_COLOR)) == scene
        assert text.replace(IDENTIFIER, SUBJECT_COLOR) == canonical_caption(scene)
        assert scene.background != SUBJECT_COLOR


def test_the_shipped_detector_tells_the_subject_from_other_stars_and_shapes() -> None:
    detector = load_detector()
    metrics = json.loads((DETECTOR_DIR / METRICS_FILE).read_text())
    assert metrics["accuracy_renders"] >= 0.95 and metrics["accuracy_vae_reconstructions"] >= 0.9
    assert metrics["subject"] == {"color": SUBJECT_COLOR, "points": SUBJECT_POINTS}
    images, labels = detector_batch(stream=777, start=0, count=300, subject=SUBJECT, size=64)
    found = detected(detector, (images + 1) / 2).float()
    assert 0.25 < labels.mean() < 0.55
    assert float((found == labels).float().mean()) >= 0.95
    pairs = zip(instance_images(64), INSTANCE_CONTEXTS, strict=True)
    large = [image for image, context in pairs if context[0] == "large"]
    assert detected(detector, (images_to_tensor(large) + 1) / 2).all()
    # The same contexts with a 5-pointed yellow star, or a 6-pointed star of another colour: not it.
    others = []
    for i, (scale, position, background) in enumerate(INSTANCE_CONTEXTS):
        yellow = Scene((ShapeObject("star", SUBJECT_COLOR, scale, position),), background)
        other = "orange" if background == "red" else "red"
        red = Scene((ShapeObject("star", other, scale, position),), background)
        others += [render(yellow, 64, i), render(red, 64, i, star_points=SUBJECT_POINTS)]
    assert not detected(detector, (images_to_tensor(others) + 1) / 2).any()


def test_generated_negatives_prompts_are_of_the_subjects_kind() -> None:
    prompts = generated_prompts("sks", 200, seed=0)
    assert prompts == generated_prompts("sks", 200, seed=0) != generated_prompts("sks", 200, seed=1)
    assert {"a sks star", "a star"} <= set(prompts)
    assert all(p.split()[-1] in ("star", "background") and "star" in p.split() for p in prompts)
    assert any(p.startswith("a large sks star at the") for p in prompts)


def test_the_subject_metrics_score_the_subject_and_other_stars_in_the_contexts() -> None:
    from edgefusion.toy.metrics import ToyEvaluator

    evaluator, detector = ToyEvaluator(), load_detector()
    prompts = context_prompts()[::3]
    scenes = [scene for _, scene in prompts]
    instances = (images_to_tensor(instance_images(64)) + 1) / 2

    def scored(points):
        renders = [render(s, 64, seed=i, star_points=points) for i, s in enumerate(scenes)]
        return score_subject((images_to_tensor(renders) + 1) / 2, scenes, evaluator, detector, instances)

    subject, plain = scored(SUBJECT_POINTS), scored(5)
    large = sum(scene.objects[0].size == "large" for scene in scenes)
    assert subject["n"] == 12 and subject["n_large"] == large and 0 < large < 12
    assert subject["subject_fidelity"] == 1.0 and plain["subject_fidelity"] == 0.0
    assert plain["subject_fidelity_small"] == 0.0
    assert subject["clip_i"] > plain["clip_i"]
    assert plain["prompt_fidelity"]["all"] == 1.0 and plain["star_rate"] == 1.0
    assert subject["prompt_fidelity"]["background"] == 1.0


def test_a_detector_trains_and_loads(tmp_path) -> None:
    metrics = train_detector(
        tmp_path / "det", SUBJECT, steps=2, batch_size=8, test_samples=8, vae=None, generator=None
    )
    assert set(metrics) >= {"accuracy_renders", "test_samples", "train_seconds", "subject"}
    assert metrics["generated_negatives"] == 0
    detector = load_detector(tmp_path / "det")
    assert detected(detector, torch.rand(3, 3, 32, 32)).shape == (3,)
    with pytest.raises(Exception, match="holds no subject detector"):
        load_detector(tmp_path)


def test_the_subject_commands(tmp_path) -> None:
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    for command, option in (("images", "--out"), ("detector", "--out"), ("eval", "--model")):
        result = CliRunner().invoke(app, ["toy", "subject", command, "--help"])
        assert result.exit_code == 0 and option in result.output
    result = CliRunner().invoke(
        app, ["toy", "subject", "images", "--out", str(tmp_path / "i"), "--size", "32"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "i").glob("*.png"))) == 5
