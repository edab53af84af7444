"""Scoring a prompt against the classifier's reading of an image."""

import torch

from edgefusion.toy.attributes import IGNORE, batch_labels, scene_labels, score_predictions
from edgefusion.toy.captions import parse
from edgefusion.toy.models import CLASSIFIER_HEADS


def _as_predictions(scenes):
    """Predictions equal to each scene's own labels (unstated heads predicted as class 0)."""
    labels = batch_labels(scenes)
    return {h: torch.where(v == IGNORE, torch.zeros_like(v), v) for h, v in labels.items()}


def test_right_of_puts_the_second_named_object_first():
    scene = parse("a red circle right of a blue star on a white background")
    labels = scene_labels(scene)
    assert labels["layout"] == 1  # horizontal
    assert labels["shape_1"] == 3 and labels["color_1"] == 2  # the blue star is on the left


def test_perfect_predictions_score_all_correct():
    prompts = [
        parse("a small red star at the left on a blue background"),
        parse("a large green circle on a white background"),
        parse("a yellow square below a black cross on a purple background"),
    ]
    rows = score_predictions(prompts, _as_predictions(prompts))
    assert all(all(r.values()) for r in rows)
    assert set(rows[0]) == {"shape", "color", "size", "position", "background"}
    assert set(rows[1]) == {"shape", "color", "size", "background"}  # position unstated
    assert set(rows[2]) == {"shape", "color", "relation", "background"}


def test_each_wrong_head_fails_its_attribute_only():
    prompt = [parse("a small red star at the left on a blue background")]
    for head, attribute in [("color_1", "color"), ("position", "position"), ("background", "background")]:
        pred = _as_predictions(prompt)
        pred[head] = (pred[head] + 1) % 5
        row = score_predictions(prompt, pred)[0]
        assert row[attribute] is False
        assert all(v for k, v in row.items() if k != attribute)


def test_two_shapes_never_pass_as_one():
    prompt = [parse("a small red star at the left on a blue background")]
    pred = _as_predictions(prompt)
    pred["layout"] = torch.tensor([1])
    row = score_predictions(prompt, pred)[0]
    assert not row["shape"] and not row["color"] and row["background"]


def test_swapped_pair_fails():
    prompt = [parse("a red circle left of a blue star on a white background")]
    swapped = [parse("a blue star left of a red circle on a white background")]
    row = score_predictions(prompt, _as_predictions(swapped))[0]
    assert not row["shape"] and not row["color"] and row["relation"]


def test_every_head_has_labels():
    labels = batch_labels([parse("a yellow square above a black cross on a purple background")])
    assert set(labels) == {h for h, _ in CLASSIFIER_HEADS}
