"""What the toy world plugs into the stages: its model names and its evaluator.

Imported with ``edgefusion.toy`` (the command line imports it before any command runs):

- the model source ``toy:``, so ``toy:teacher`` names a shipped folder wherever a model folder
  is accepted (:mod:`edgefusion.pipeline.registry`);
- the evaluator ``toy`` (attribute accuracy, toy CLIP score, FID_toy), which scores the images of
  every toy-world model, in ``edgefusion eval`` and the quantize and export reports
  (:mod:`edgefusion.eval.evaluators`), with the toy eval prompts as the reports' default.

Only the registration happens on import; the metric models load when an evaluator is asked for.
"""

from __future__ import annotations

from pathlib import Path

from edgefusion.eval.evaluators import EvaluatorPlugin, register_evaluator
from edgefusion.pipeline.registry import register_model_source
from edgefusion.toy.registry import PREFIX, shipped_path

DEFAULT_EVALUATOR = f"{PREFIX}evaluator"


def _load(weights: str | None = None):
    from edgefusion.toy.metrics import ToyEvaluator

    return ToyEvaluator(weights or DEFAULT_EVALUATOR)


def _claims(folder: Path) -> bool:
    from edgefusion.toy.metrics import is_toy_model

    return is_toy_model(folder)


def _check_prompts(prompts: list[str]) -> object:
    from edgefusion.toy.metrics import check_toy_prompts

    return check_toy_prompts(prompts)


def _default_prompts() -> Path:
    from edgefusion.toy.prompts import EVAL_PROMPTS_PATH

    return EVAL_PROMPTS_PATH


def _headline(metrics: dict) -> dict[str, float]:
    from edgefusion.toy.metrics import headline

    return headline(metrics)


def _table_rows(metrics: dict) -> list[tuple[str, str]]:
    from edgefusion.toy.metrics import table_rows

    return table_rows(metrics)


register_model_source(PREFIX, shipped_path, example=f"{PREFIX}teacher")
register_evaluator(
    EvaluatorPlugin(
        name="toy",
        load=_load,
        claims=_claims,
        check_prompts=_check_prompts,
        default_prompts=_default_prompts,
        headline=_headline,
        table_rows=_table_rows,
    )
)
