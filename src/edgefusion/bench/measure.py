"""Timing and memory primitives shared by the component and end-to-end benchmarks."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch


def time_runs(run: Callable[[], object], warmup: int, repeats: int, clock=time.perf_counter) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return times


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the mark then covers the process's whole life
        pass


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bind(call: Callable[..., object], tensors: dict[str, torch.Tensor]) -> Callable[[], object]:
    """``call`` on the named ``tensors``, as a callable of no arguments."""
    return lambda: call(**tensors)
