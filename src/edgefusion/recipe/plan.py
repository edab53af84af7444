"""What a recipe run would do, decided and checked before any stage runs.

Every stage is first built from its settings: references resolved, its own config class
validating them (the same checks as the stand-alone command), its input models and folders
checked to exist, its outputs placed in ``OUT/NAME``. Any problem is an error naming the line of
the recipe to fix, and nothing has run yet.

Then each stage gets its fingerprint: a hash of its resolved settings (the full config, defaults
included, with the recipe's own folder written as ``<out>`` and the settings the recipe places
left out) and of the fingerprints of the stages it references. Against the state file
(:mod:`edgefusion.recipe.state`) that decides the stage's action:

- ``new``: never run here;
- ``redo``: its settings or an input changed since it ran, an input stage runs again or was
  remade after it, or its output is gone; its folder is cleared and it runs from the start;
- ``resume``: it was interrupted with the same fingerprint; it continues (training from its
  newest checkpoint, data stages from their committed chunks);
- ``done``: finished with the same fingerprint; skipped.

Because a fingerprint includes the fingerprints of the stages a stage references, a change
reaches every stage that depends on it, and no other.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefusion.config import config_to_dict
from edgefusion.errors import EdgefusionError
from edgefusion.recipe.document import Document, Key, read_document
from edgefusion.recipe.kinds import StageKind, stage_kind
from edgefusion.recipe.references import Reference, references_in, substitute
from edgefusion.recipe.spec import Recipe, StageSpec, flatten_settings, parse_recipe
from edgefusion.recipe.state import DONE, RecipeState, read_state

NEW, REDO, RESUME = "new", "redo", "resume"
#: How the recipe's own folder is written in fingerprints: moving a run elsewhere changes nothing.
OUT_MARK = "<out>"


@dataclass
class PlannedStage:
    """One stage, built and checked, with what a run will do with it and why."""

    spec: StageSpec
    kind: StageKind
    folder: Path
    config: Any
    output: Path
    settings: dict[str, Any]
    upstream: list[str]
    fingerprint: str
    action: str = NEW
    reason: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Plan:
    """A recipe's stages in order, its output folder, and the state they were compared with."""

    recipe: Recipe
    out: Path
    state: RecipeState
    stages: list[PlannedStage] = field(default_factory=list)

    def stage(self, name: str) -> PlannedStage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise EdgefusionError(f"no stage named {name}: the recipe's stages are {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]


def make_plan(path: str | Path, out: str | Path | None = None) -> Plan:
    """Read, check and plan the recipe at ``path`` writing to ``out`` (default: its ``out``)."""
    recipe = parse_recipe(read_document(path))
    folder = Path(out) if out is not None else recipe.out
    if folder is None:
        raise recipe.document.error((), "set out (the recipe's folder) in the recipe, or pass --out")
    folder = folder.expanduser().resolve()
    kinds = [_kind(recipe, spec) for spec in recipe.stages]
    for spec in recipe.stages:
        _check_references(recipe, spec)
    plan = Plan(recipe, folder, read_state(folder, str(path)))
    for spec, kind in zip(recipe.stages, kinds, strict=True):
        plan.stages.append(_plan_stage(plan, spec, kind))
    for stage in plan.stages:
        stage.action, stage.reason = _decide(plan, stage)
    return plan


def _kind(recipe: Recipe, spec: StageSpec) -> StageKind:
    try:
        return stage_kind(spec.kind)
    except EdgefusionError as err:
        raise recipe.document.error((*spec.key, "kind"), f"stage {spec.name}: {err}") from None


def _check_references(recipe: Recipe, spec: StageSpec) -> None:
    """Each reference names an input, or an earlier stage (its own folder for ``.dir``)."""
    order = {s.name: s.index for s in recipe.stages}
    where = recipe.document.error
    found = []
    for dotted, value in flatten_settings(spec.settings).items():
        try:
            found += [(dotted, reference) for _, reference in references_in(value)]
        except EdgefusionError as err:
            raise where(spec.origin(dotted), f"stage {spec.name}: {err}") from None
    for dotted, reference in found:
        origin = spec.origin(dotted)
        if not reference.is_stage:
            if reference.name not in recipe.inputs:
                known = ", ".join(recipe.inputs) or "none"
                raise where(origin, f"{reference.text}: no input named {reference.name} (inputs: {known})")
            continue
        index = order.get(reference.name)
        if index is None:
            raise where(origin, f"{reference.text}: no stage named {reference.name}")
        if index == spec.index and reference.field == "out":
            raise where(
                origin,
                f"{reference.text}: a stage cannot use its own output (its folder is ${{{spec.name}.dir}})",
            )
        if index > spec.index:
            raise where(
                origin,
                f"{reference.text}: stage {reference.name} (stage {index}) runs after {spec.name} (stage "
                f"{spec.index}): a stage can use only what earlier stages made",
            )


def _plan_stage(plan: Plan, spec: StageSpec, kind: StageKind) -> PlannedStage:
    """Build the stage's config from its resolved settings, check its inputs, fingerprint it."""
    folder = plan.out / spec.name
    done = {stage.name: stage for stage in plan.stages}

    def resolve(reference: Reference) -> str:
        if not reference.is_stage:
            return plan.recipe.inputs[reference.name]
        if reference.field == "dir":
            return str(plan.out / reference.name)
        return str(done[reference.name].output)

    resolved = substitute(spec.settings, resolve)
    try:
        config = kind.build(resolved, folder)
    except EdgefusionError as err:
        origin = _error_place(str(err), spec, plan.recipe.document)
        raise plan.recipe.document.error(origin, f"stage {spec.name} ({kind.name}): {err}") from None
    _check_inputs(plan, spec, kind, resolved)
    settings = _fingerprint_settings(kind, config, plan.out)
    upstream = sorted(
        {r.name for _, r in references_in(spec.settings) if r.is_stage and r.name != spec.name},
        key=list(done).index,
    )
    fingerprint = _hash(
        {"kind": kind.name, "settings": settings, "inputs": {u: done[u].fingerprint for u in upstream}}
    )
    return PlannedStage(spec, kind, folder, config, kind.output(config), settings, upstream, fingerprint)


def _error_place(message: str, spec: StageSpec, document: Document) -> Key:
    """Where in the file a stage's config error points: the setting the stage spells that the
    message names (inside a list, such as a data pipeline's stages, by its own key), preferring
    one the message says something of (``KEY:``, ``KEY must``, ``KEY is``), then the longest;
    else the stage's config file line for a setting it sets; else the stage's ``kind`` line."""
    message = message.split("valid keys here are")[0]
    best: Key | None = None
    best_rank = (0, 0)
    depth = len(spec.key) + 1  # below "config" or "set"
    for key in document.lines:
        rest = key[depth:]
        names = [part for part in rest if isinstance(part, str)]
        if key[: len(spec.key)] != spec.key or not names:
            continue
        name = names[-1] if len(names) < len(rest) else ".".join(names)
        rank = _mention(message, name)
        if rank > best_rank:
            best, best_rank = key, rank
    if best is not None:
        return best
    written = sorted(flatten_settings(spec.settings), key=len, reverse=True)
    return spec.origin(next((key for key in written if _mention(message, key) > (0, 0)), ""))


def _mention(message: str, key: str) -> tuple[int, int]:
    """How strongly ``message`` names the setting ``key``: (0, 0) not at all, else (1 when it
    says something of it, the key's length)."""
    word = rf"(?<![\w.]){re.escape(key)}(?!\w)"
    if re.search(word, message) is None:
        return (0, 0)
    return (1 if re.search(word + r"(?=:| must| is)", message) else 0, len(key))


def _check_inputs(plan: Plan, spec: StageSpec, kind: StageKind, resolved: dict[str, Any]) -> None:
    """Every input model or folder the stage names exists (those an earlier stage makes aside)."""
    flat, written = flatten_settings(resolved), flatten_settings(spec.settings)
    for key in kind.inputs:
        value, text = flat.get(key), written.get(key)
        if value is None or any(r.is_stage for _, r in references_in(text)):
            continue
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for item in values:
            problem = _missing_input(str(item))
            if problem:
                origin = spec.origin(key)
                raise plan.recipe.document.error(origin, f"stage {spec.name}: {key}: {problem}")


def _missing_input(value: str) -> str | None:
    """Why ``value`` names no model or folder, or None when it does (a built-in architecture
    name, a registered name such as ``toy:teacher``, or a path that exists)."""
    from edgefusion.pipeline.configs import BUILTIN_MODELS
    from edgefusion.pipeline.registry import model_source
    from edgefusion.pipeline.sources import resolve_model_path

    if value in BUILTIN_MODELS:
        return None
    if model_source(value) is not None:
        try:
            resolve_model_path(value)
        except EdgefusionError as err:
            return str(err)
        return None
    if not Path(value).expanduser().exists():
        return f"{value} does not exist: check the path (relative paths are read from the current folder)"
    return None


def _fingerprint_settings(kind: StageKind, config: Any, out: Path) -> dict[str, Any]:
    """The stage's full resolved settings as flat data: placed settings left out, the recipe's
    folder written as ``<out>``."""
    data = kind.describe(config) if kind.describe is not None else config_to_dict(config)
    flat = {k: v for k, v in flatten_settings(data).items() if k not in kind.placed}
    return json.loads(json.dumps(flat, default=str).replace(f"{out}/", f"{OUT_MARK}/"))


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _decide(plan: Plan, stage: PlannedStage) -> tuple[str, str]:
    """The stage's action and its reason, from its state record and its input stages' actions."""
    record = plan.state.stages.get(stage.name)
    if record is None:
        return NEW, "never run here"
    if record.fingerprint != stage.fingerprint:
        return REDO, _what_changed(plan, stage, record.settings, record.kind)
    for name in stage.upstream:
        upstream = plan.stage(name)
        if upstream.action != DONE:
            return REDO, f"its input stage {name} runs again"
        made = plan.state.stages[name].finished
        if record.inputs.get(name, {}).get("finished") != made:
            return REDO, f"its input stage {name} was remade after it ran"
    if record.status != DONE:
        return RESUME, "interrupted before it finished"
    if not stage.output.exists():
        return REDO, f"its output {stage.output} is missing"
    return DONE, "finished, settings and inputs unchanged"


def _what_changed(plan: Plan, stage: PlannedStage, before: dict[str, Any], kind: str) -> str:
    if kind != stage.kind.name:
        return f"its kind changed ({kind} -> {stage.kind.name})"
    changed = sorted(
        k for k in before.keys() | stage.settings.keys() if before.get(k) != stage.settings.get(k)
    )
    if changed:
        shown = [f"{k} ({_short(before.get(k))} -> {_short(stage.settings.get(k))})" for k in changed[:3]]
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        noun = "setting" if len(changed) == 1 else "settings"
        return f"{noun} {', '.join(shown)}{more} changed"
    inputs = [name for name in stage.upstream if plan.stage(name).action != DONE] or stage.upstream
    return f"its input stage {', '.join(inputs)} changed"


def _short(value: Any) -> str:
    text = "unset" if value is None else json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
