"""The shared training loop: learning-rate schedules and per-module rates."""

from __future__ import annotations

import math

import pytest
import torch

from edgefusion.train.config import LoopConfig
from edgefusion.train.loop import lr_factor, param_groups


def test_constant_schedule_warms_up_linearly_then_holds() -> None:
    cfg = LoopConfig(steps=10, lr_warmup_steps=4)
    assert [lr_factor(s, cfg) for s in range(10)] == pytest.approx([0.25, 0.5, 0.75] + [1.0] * 7)


def test_cosine_schedule_follows_a_half_cosine_after_the_warm_up() -> None:
    cfg = LoopConfig(steps=12, lr_warmup_steps=2, lr_schedule="cosine")
    factors = [lr_factor(s, cfg) for s in range(12)]
    assert factors[:2] == pytest.approx([0.5, 1.0])
    assert factors[2:] == pytest.approx([0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)])
    assert factors[7] == pytest.approx(0.5)  # half way through the decay
    assert all(a > b for a, b in zip(factors[2:], factors[3:], strict=False))
    assert 0 < factors[-1] < 0.03  # the last step still learns


def test_cosine_schedule_without_warm_up_starts_at_the_full_rate() -> None:
    cfg = LoopConfig(steps=4, lr_schedule="cosine")
    assert [lr_factor(s, cfg) for s in range(4)] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])


def test_parameters_named_with_a_prefix_train_at_their_own_rate() -> None:
    model = torch.nn.ModuleDict({"unet": torch.nn.Linear(2, 2), "text_encoder": torch.nn.Linear(2, 2)})
    model["unet"].bias.requires_grad_(False)
    groups = param_groups(model, LoopConfig(learning_rate=1e-3), {"text_encoder.": 1e-5})
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    assert groups[0]["params"] == [model["unet"].weight]  # frozen parameters stay out
    assert groups[1]["params"] == [model["text_encoder"].weight, model["text_encoder"].bias]
    assert [g["lr"] for g in param_groups(model, LoopConfig(learning_rate=1e-3))] == [1e-3]
