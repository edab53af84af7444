"""``edgefusion recipe run``: the planned stages, in order, each once its inputs are made.

The plan (:mod:`edgefusion.recipe.plan`) has checked everything first and decided each stage's
action; this module carries it out. A ``new`` or ``redo`` stage starts from an empty folder: the
recipe clears its folder under its own output (that is its decision to make; a stand-alone
command still refuses a changed setting without ``--overwrite``). A ``resume`` runs the stage
again on its folder, where training stages continue from their newest checkpoint and data
stages from their committed chunks; a stage kind without its own resume starts again. The state
file records each start and finish, so an interruption anywhere leaves a state the next run
reads correctly.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from edgefusion.recipe.plan import NEW, REDO, RESUME, Plan, PlannedStage, make_plan
from edgefusion.recipe.state import DONE, StageRecord


def describe_plan(plan: Plan, until: str | None = None) -> list[str]:
    """One line per stage: ``k/n NAME (KIND): ACTION: why``; stages after ``until`` are marked."""
    last = plan.names().index(plan.stage(until).name) if until else len(plan.stages) - 1
    lines = []
    for index, stage in enumerate(plan.stages):
        line = (
            f"{index + 1}/{len(plan.stages)} {stage.name} ({stage.kind.name}): {stage.action}: {stage.reason}"
        )
        lines.append(line + (" [after --until, not run]" if index > last else ""))
    return lines


def run_recipe(
    path: str | Path,
    out: str | Path | None = None,
    until: str | None = None,
    echo: Callable[[str], None] = print,
) -> Plan:
    """Plan the recipe at ``path`` (every check first), then run its stages up to and including
    ``until`` (default: all); returns the plan it carried out."""
    plan = make_plan(path, out)
    last = plan.names().index(plan.stage(until).name) if until else len(plan.stages) - 1
    selected = plan.stages[: last + 1]
    plan.state.order = plan.names()
    for number, stage in enumerate(selected, start=1):
        echo(
            f"stage {number}/{len(selected)} {stage.name} ({stage.kind.name}): {stage.action}: {stage.reason}"
        )
        if stage.action != DONE:
            run_stage(plan, stage)
    return plan


def run_stage(plan: Plan, stage: PlannedStage) -> None:
    """Run one stage, recording its start, its finish, and the time an interrupted attempt took."""
    if stage.action in (NEW, REDO) or (stage.action == RESUME and not stage.kind.resumes):
        shutil.rmtree(stage.folder, ignore_errors=True)
    stage.folder.mkdir(parents=True, exist_ok=True)
    state = plan.state
    record = StageRecord(
        kind=stage.kind.name,
        fingerprint=stage.fingerprint,
        settings=stage.settings,
        inputs={
            name: {"fingerprint": plan.stage(name).fingerprint, "finished": state.stages[name].finished}
            for name in stage.upstream
        },
        folder=str(stage.folder),
        output=str(stage.output),
    )
    state.start(stage.name, record, plan.out)
    started = time.perf_counter()
    try:
        stage.kind.run(stage.config)
    except BaseException:
        state.add_time(stage.name, plan.out, time.perf_counter() - started)
        raise
    state.finish(stage.name, plan.out, time.perf_counter() - started)
    stage.action = DONE
