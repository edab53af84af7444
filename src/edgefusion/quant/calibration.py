"""Activation calibration: per-tensor ranges of every quantized layer's input and output.

An NPU toolchain that runs activations in int16 (the "A16" of the paper's W8A16) needs one range
per tensor to pick its scale; we record min/max over real denoising runs, so the ranges cover
every timestep the sampler visits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from edgefusion.pipeline.sampling import generate_tensors
from edgefusion.quant.w8a16 import QUANTIZED_TYPES


@contextmanager
def _recording(unet, ranges: dict[str, dict[str, list[float]]]) -> Iterator[None]:
    def hook(name):
        def record(module, inputs, output):
            for key, tensor in (("input", inputs[0]), ("output", output)):
                lo, hi = float(tensor.min()), float(tensor.max())
                seen = ranges.setdefault(name, {}).setdefault(key, [lo, hi])
                seen[0], seen[1] = min(seen[0], lo), max(seen[1], hi)

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in unet.named_modules()
        if isinstance(module, QUANTIZED_TYPES)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def calibrate_activations(
    pipe, prompts: list[str], steps: int, guidance: float, seed: int = 0
) -> dict[str, dict[str, list[float]]]:
    """``{layer name: {"input": [min, max], "output": [min, max]}}`` over generating ``prompts``
    (seed ``seed + i``) with the quantized pipeline ``pipe``."""
    ranges: dict[str, dict[str, list[float]]] = {}
    with _recording(pipe.unet, ranges), torch.no_grad():
        generate_tensors(pipe, prompts, [seed + i for i in range(len(prompts))], steps, guidance)
    return ranges
