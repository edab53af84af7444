"""``ToyEvaluator``, by the name the curation stage's toy scorer imports it under.

The toy metrics live in the toy world (:mod:`edgefusion.toy.metrics`), which registers them as the
evaluator ``toy`` when imported; this module asks the registry for them, so that the evaluation
package imports nothing of the toy world. New code calls
``edgefusion.eval.evaluators.get_evaluator("toy").load(weights)``.
"""

from __future__ import annotations

from typing import Any

from edgefusion.eval.evaluators import get_evaluator


def ToyEvaluator(path: str | None = None) -> Any:
    """The toy world's evaluator (classifier and toy CLIP) from ``path``, default ``toy:evaluator``."""
    return get_evaluator("toy").load(path)
