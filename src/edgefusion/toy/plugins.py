"""What the toy world plugs into the stages: its model names, its evaluator and its curation tools.

Imported with ``edgefusion.toy`` (the command line imports it before any command runs):

- the model source ``toy:``, so ``toy:teacher`` names a shipped folder wherever a model folder
  is accepted (:mod:`edgefusion.pipeline.registry`);
- the evaluator ``toy`` (attribute accuracy, toy CLIP score, FID_toy), which scores the images of
  every toy-world model, in ``edgefusion eval`` and the quantize and export reports
  (:mod:`edgefusion.eval.evaluators`), with the toy eval prompts as the reports' default;
- the prompt sets ``eval`` and ``val`` (:mod:`edgefusion.eval.prompts`), which every
  ``--prompts`` takes as a name;
- the curation tools of :mod:`edgefusion.toy.curation` (:mod:`edgefusion.data.registry`): the
  captioner ``toy``, the prompt source ``toy``, the renderer ``toy:render`` and the curation
  scorer ``toy``;
- the recipe stage kind ``toy-data`` (:mod:`edgefusion.toy.recipe_stage`), ``edgefusion toy
  data`` as a stage of ``edgefusion recipe``.

Only the registration happens on import; the metric models load when an evaluator is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.data.registry import CAPTIONERS, PROMPT_SOURCES, RENDERERS, SCORERS
from edgefusion.eval.evaluators import EvaluatorPlugin, register_evaluator
from edgefusion.eval.prompts import register_prompt_set
from edgefusion.pipeline.registry import register_model_source
from edgefusion.recipe.kinds import register_stage_kind
from edgefusion.toy.recipe_stage import TOY_DATA
from edgefusion.toy.registry import PREFIX, shipped_path

DEFAULT_EVALUATOR = f"{PREFIX}evaluator"


@dataclass(frozen=True)
class Deferred:
    """The function ``module:name``, imported when first called, so that registering loads no
    torch. It pickles as its name, so a data stage can hand it to workers that never imported
    this world."""

    target: str

    def __call__(self, *args: Any) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)(*args)


def _load(weights: str | None = None):
    from edgefusion.toy.metrics import ToyEvaluator

    return ToyEvaluator(weights or DEFAULT_EVALUATOR)


def _default_prompts() -> Path:
    from edgefusion.toy.prompts import EVAL_PROMPTS_PATH

    return EVAL_PROMPTS_PATH


def _val_prompts() -> Path:
    from edgefusion.toy.prompts import VAL_PROMPTS_PATH

    return VAL_PROMPTS_PATH


_METRICS = "edgefusion.toy.metrics"
_CURATION = "edgefusion.toy.curation"

register_model_source(PREFIX, shipped_path, example=f"{PREFIX}teacher")
register_prompt_set("eval", _default_prompts)
register_prompt_set("val", _val_prompts)
register_evaluator(
    EvaluatorPlugin(
        name="toy",
        load=_load,
        claims=Deferred(f"{_METRICS}:is_toy_model"),
        check_prompts=Deferred(f"{_METRICS}:check_toy_prompts"),
        default_prompts=_default_prompts,
        headline=Deferred(f"{_METRICS}:headline"),
        table_rows=Deferred(f"{_METRICS}:table_rows"),
    )
)
CAPTIONERS.register("toy", Deferred(f"{_CURATION}:toy_captioner"))
PROMPT_SOURCES.register("toy", Deferred(f"{_CURATION}:toy_prompts"))
RENDERERS.register(f"{PREFIX}render", Deferred(f"{_CURATION}:render_with_records"))
SCORERS.register("toy", Deferred(f"{_CURATION}:toy_scorer"))
register_stage_kind(TOY_DATA)
