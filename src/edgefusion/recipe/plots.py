"""Loss curves of a training stage's ``losses.csv``, as a PNG.

Every training stage logs one row per optimizer step (``step``, each loss term, ``lr``,
``grad_norm``, ``skipped``; :mod:`edgefusion.train.loop`). The terms differ by orders of
magnitude (a feature-KD sum beside a task loss), so each gets its own small plot rather than a
shared axis that would flatten all but the largest. A run in progress may be writing the file:
a row cut short is skipped, not an error.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

#: Columns of ``losses.csv`` that are no curve: the x axis, a count of skipped samples, wall time.
NOT_CURVES = ("step", "skipped", "seconds")
_COLUMNS = 3


def read_curves(log: Path) -> dict[str, tuple[list[int], list[float]]]:
    """``{term: (steps, values)}`` of every logged column; unreadable rows and values are left out."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    with log.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                step = int(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            for name, text in row.items():
                if name is None or name in NOT_CURVES:
                    continue
                value = _number(text)
                if value is not None:
                    steps, values = curves.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(value)
    return curves


def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def plot_curves(curves: dict[str, tuple[list[int], list[float]]], title: str) -> bytes:
    """A PNG with one small plot per term (log scale where a term is positive throughout)."""
    from matplotlib.figure import Figure

    names = list(curves)
    rows = -(-len(names) // _COLUMNS)
    figure = Figure(figsize=(4 * _COLUMNS, 2.6 * rows), layout="constrained")
    figure.suptitle(title)
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, _COLUMNS, index + 1)
        steps, values = curves[name]
        axes.plot(steps, values, linewidth=1)
        if values and min(values) > 0 and max(values) / min(values) > 20:
            axes.set_yscale("log")
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
