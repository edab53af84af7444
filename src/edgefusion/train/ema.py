"""Exponential moving average of a model's weights, kept as a frozen copy of the model.

A module (not a list of shadow tensors, as in diffusers' ``EMAModel``) because both users call
it: KD ships the EMA student (BK-SDM trains with EMA), and latent consistency
distillation evaluates its target network through it (decay 0.95, no warm-up).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema <- decay * ema + (1 - decay) * weights`` after each optimizer step.

    With ``warmup`` the decay used at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` (diffusers'
    ``EMAModel`` default), so early, random weights fade quickly.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        self.decay, self.warmup = decay, warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move every EMA weight towards ``model``'s (the unwrapped trained model)."""
        weight = 1.0 - self.current_decay()
        for ema_param, param in zip(self.module.parameters(), model.parameters(), strict=True):
            ema_param.lerp_(param.detach().to(ema_param.dtype), weight)
        self.num_updates += 1
