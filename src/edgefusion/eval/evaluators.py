"""Evaluators with exact metrics of their own, by name; a world that has them registers one here.

The COCO protocol's metrics (IS, FID, KID, CLIP score) are built into
:mod:`edgefusion.eval.protocol`. A world that can score images exactly against their prompts (the
toy world: attribute accuracy, toy CLIP score, FID_toy) registers an :class:`EvaluatorPlugin`
when it is imported; ``edgefusion eval`` and the quantize and export reports read this table, so
they score that world's models without importing it. A plug-in's name is the key its metrics
appear under (``toy``: ``eval --toy``, ``metrics.json``'s ``toy``, a report's ``toy_delta``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.sources import resolve_model_path


class Evaluator(Protocol):
    """Loaded metric models: ``score(images, prompts)`` takes images in [0, 1], (N, 3, H, W)."""

    def score(self, images: Any, prompts: list[str]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EvaluatorPlugin:
    """One registered evaluator.

    - ``load(weights)``: the :class:`Evaluator`, from ``weights`` (a model spec) or its default;
    - ``claims(folder)``: whether a model (its resolved folder) is of this world, so that its
      images are scored by default;
    - ``check_prompts(prompts)``: refuse prompts it cannot score, before any image is generated;
    - ``default_prompts()``: the prompt file reports use when given none;
    - ``headline(metrics)``: the flat numbers a report compares (before / after quantization);
    - ``table_rows(metrics)``: ``(metric, value)`` rows of ``metrics.md``.
    """

    name: str
    load: Callable[[str | None], Evaluator]
    claims: Callable[[Path], bool]
    check_prompts: Callable[[list[str]], object]
    default_prompts: Callable[[], Path]
    headline: Callable[[dict[str, Any]], dict[str, float]]
    table_rows: Callable[[dict[str, Any]], list[tuple[str, str]]]


_EVALUATORS: dict[str, EvaluatorPlugin] = {}


def register_evaluator(plugin: EvaluatorPlugin) -> None:
    _EVALUATORS[plugin.name] = plugin


def get_evaluator(name: str) -> EvaluatorPlugin:
    """The evaluator registered as ``name``; an error says which ones are."""
    if name not in _EVALUATORS:
        known = ", ".join(_EVALUATORS) or "none"
        raise EdgefusionError(f"no evaluator {name!r} is registered (registered: {known})")
    return _EVALUATORS[name]


def evaluator_for(model: str | Path | None) -> EvaluatorPlugin | None:
    """The registered evaluator that claims ``model``, if any (none for a model that does not
    resolve: the command that loads it reports that)."""
    if model is None:
        return None
    try:
        folder = resolve_model_path(model)
    except EdgefusionError:
        return None
    return next((plugin for plugin in _EVALUATORS.values() if plugin.claims(folder)), None)


def default_prompts() -> Path:
    """The prompt file of the first registered evaluator: what reports generate for by default."""
    if not _EVALUATORS:
        raise EdgefusionError("no prompt file given and no evaluator registered to supply one")
    return next(iter(_EVALUATORS.values())).default_prompts()
