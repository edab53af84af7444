"""The position probe reads an object's side from an image the way the toy evaluator would."""

import pytest

from edgefusion.toy.metrics import render_prompts
from edgefusion.toy.position_probe import SIDES, captions, half_shares


@pytest.mark.parametrize("position", list(SIDES))
def test_renders_put_their_mass_on_the_named_side(position: str) -> None:
    images = render_prompts(captions(position), seed=0) * 2 - 1  # the decoder's [-1, 1] range
    axis, index = SIDES[position]
    first_half = half_shares(images, axis)
    named = first_half if index == 0 else 1 - first_half
    assert named.min() > 0.9, named


def test_an_object_in_the_middle_splits_evenly_left_and_right() -> None:
    # (not top and bottom: a triangle's mass lies low, whatever its position)
    images = render_prompts(captions("center"), seed=0) * 2 - 1
    assert (half_shares(images, -1) - 0.5).abs().max() < 0.15
