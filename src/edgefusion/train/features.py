"""Capture intermediate outputs of a model by module name, for feature-level distillation.

Hooks go on the *unwrapped* model (``accelerator.unwrap_model``): DDP runs the same inner modules,
so the hooks fire under ``accelerate launch`` without any ``module.`` prefix surgery (the pain
point of BK-SDM's training script). They live only inside a ``with`` block.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from edgefusion.errors import EdgefusionError


@contextmanager
def capture_features(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that each forward pass of ``model`` fills with the outputs of the modules
    ``names`` (the hidden states of a block that returns ``(hidden, residuals)``); the hooks are
    removed when the block exits, even on error."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, list(modules), n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise EdgefusionError(
                f"the model has no module {name!r}{hint}: feature pairs must name modules of the "
                "unwrapped model"
            )
    features: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(_store(features, name)) for name in names]
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()


def _store(features: dict[str, torch.Tensor], name: str):
    def hook(module: nn.Module, inputs: object, output: object) -> None:
        features[name] = output[0] if isinstance(output, tuple) else output

    return hook
