"""The kinds of stage a recipe can run, and the registry through which a package adds one.

A kind wraps an existing stage function: it builds the stage's own config from the recipe's
settings (the config class validates them, so a recipe is checked exactly as the stand-alone
command would check it), places the stage's outputs under the recipe's folder for that stage,
names the settings that are inputs (checked to exist before anything runs) and runs the stage in
process. The built-in kinds live in :mod:`edgefusion.recipe.stages`; a model world adds its own
(the toy world's ``toy-data``) by calling :func:`register_stage_kind` when it is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.errors import EdgefusionError


@dataclass(frozen=True)
class StageKind:
    """How a recipe runs one kind of stage.

    - ``build(settings, folder)``: the stage's validated config, its outputs placed in ``folder``
      (a user error for a bad setting, raised by the config class).
    - ``run(config)``: the stage itself, in process.
    - ``output(config)``: the folder ``${STAGE.out}`` names.
    - ``inputs``: dotted settings that name models or folders which must exist before the run.
    - ``placed``: settings the recipe sets itself (where outputs go), left out of fingerprints.
    - ``resumes``: a re-run continues the work a killed run left in its folder (training stages
      from their checkpoints, data stages from committed chunks, generation from finished
      images); otherwise an unfinished stage starts again from an empty folder.
    - ``describe(config)``: the settings a fingerprint is made of (default: the config as data).
    """

    name: str
    help: str
    build: Callable[[dict[str, Any], Path], Any]
    run: Callable[[Any], Any]
    output: Callable[[Any], Path]
    inputs: tuple[str, ...] = ()
    placed: tuple[str, ...] = ()
    resumes: bool = False
    describe: Callable[[Any], dict[str, Any]] | None = None


STAGE_KINDS: dict[str, StageKind] = {}


def register_stage_kind(kind: StageKind) -> None:
    """Make ``kind.name`` a stage kind of every recipe (a second registration replaces the first)."""
    STAGE_KINDS[kind.name] = kind


def stage_kind(name: str) -> StageKind:
    """The registered kind ``name``, or an error listing the kinds there are."""
    kind = STAGE_KINDS.get(name)
    if kind is None:
        raise EdgefusionError(f"unknown stage kind {name!r}: use one of {', '.join(sorted(STAGE_KINDS))}")
    return kind
