"""The recipe file's format: top-level ``out``, ``inputs`` and ``stages``, each stage's settings.

::

    out: runs/recipe/toy              # the recipe's folder (``--out`` wins)
    inputs:                           # named models and folders, used as ${NAME}
      teacher: toy:teacher
    stages:
      - name: distill                 # unique; ${distill.out} names its output
        kind: distill                 # a registered stage kind (edgefusion recipe kinds)
        config: configs/kd/x.yaml     # the stage's own config file, or a mapping inline
        set:                          # KEY: VALUE overrides (dotted keys), or a list of KEY=VALUE
          teacher: ${teacher}
          train.steps: 200

Relative paths are read from the current folder, as every command reads them. A value that
still holds a ``<fill in: ...>`` placeholder is refused with its line: a template must be
completed before anything runs. Parsing checks the shape of the file; what each setting means
is checked by the stage's own config class (:mod:`edgefusion.recipe.plan`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_config_mapping
from edgefusion.recipe.document import Document, Key

RECIPE_KEYS = ("out", "inputs", "stages")
STAGE_KEYS = ("name", "kind", "config", "set")
#: How a template marks a value the user must supply: ``<fill in: path to SD-v1.4>``.
PLACEHOLDER = re.compile(r"<\s*fill in\b[^>]*>", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][\w-]*")


@dataclass(frozen=True)
class StageSpec:
    """One stage as the file writes it: its settings merged (config file or inline mapping, then
    ``set``), and where in the file each setting comes from, for errors."""

    index: int
    name: str
    kind: str
    settings: dict[str, Any]
    origins: dict[str, Key]
    key: Key

    def origin(self, dotted: str) -> Key:
        """The place in the file of a setting (or of its nearest parent the file spells)."""
        parts = dotted.split(".")
        while parts:
            found = self.origins.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return (*self.key, "kind")


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: its document (for line numbers), output folder, inputs and stages."""

    document: Document
    out: Path | None
    inputs: dict[str, str]
    stages: list[StageSpec]


def parse_recipe(document: Document) -> Recipe:
    """The recipe in ``document``, its shape checked; each error names the line to fix."""
    data = document.data
    if not isinstance(data, dict):
        raise document.error((), "a recipe is a mapping with out, inputs and stages")
    _check_keys(document, data, (), RECIPE_KEYS, "recipe key")
    _check_placeholders(document, data, ())
    inputs = _inputs(document, data.get("inputs") or {})
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise document.error(("stages",), "a recipe needs a list of stages")
    specs: list[StageSpec] = []
    for index, entry in enumerate(stages):
        spec = _stage(document, entry, index)
        if any(s.name == spec.name for s in specs):
            raise document.error(
                (*spec.key, "name"), f"two stages are named {spec.name}: names must be unique"
            )
        specs.append(spec)
    out = data.get("out")
    if out is not None and not isinstance(out, str):
        raise document.error(("out",), "out must be a folder path")
    return Recipe(document, Path(out) if out else None, inputs, specs)


def _check_keys(document: Document, data: dict, key: Key, allowed: tuple[str, ...], what: str) -> None:
    for name in data:
        if name not in allowed:
            raise document.error((*key, name), f"unknown {what} {name!r}: use {', '.join(allowed)}")


def _check_placeholders(document: Document, value: Any, key: Key) -> None:
    """Refuse a template value left unfilled, naming its line and what it asks for."""
    if isinstance(value, str) and PLACEHOLDER.search(value):
        where = ".".join(str(k) for k in key)
        raise document.error(key, f"fill in the path at {where}: it still reads {value!r}")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_placeholders(document, item, (*key, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_placeholders(document, item, (*key, index))


def _inputs(document: Document, inputs: Any) -> dict[str, str]:
    if not isinstance(inputs, dict):
        raise document.error(("inputs",), "inputs must map names to models or folders")
    for name, value in inputs.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise document.error(
                ("inputs", name), f"input name {name!r} must be a word (letters, digits, _ or -)"
            )
        if not isinstance(value, str) or not value:
            raise document.error(("inputs", name), f"input {name} must be a model name or a path")
    return dict(inputs)


def _stage(document: Document, entry: Any, index: int) -> StageSpec:
    key: Key = ("stages", index)
    if not isinstance(entry, dict):
        raise document.error(key, "a stage is a mapping with name, kind, config and set")
    _check_keys(document, entry, key, STAGE_KEYS, "stage key")
    for field in ("name", "kind"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise document.error(key, f"stage {index + 1} needs {field}: a word")
    if not _NAME.fullmatch(entry["name"]):
        raise document.error(
            (*key, "name"), f"stage name {entry['name']!r} must be a word (letters, digits, _ or -)"
        )
    settings: dict[str, Any] = {}
    origins: dict[str, Key] = {}
    config = entry.get("config")
    if isinstance(config, str):
        try:
            settings = read_config_mapping(config, "stage config file")
        except EdgefusionError as err:
            raise document.error((*key, "config"), str(err)) from None
        origins = {".".join(path): (*key, "config") for path in _paths(settings)}
    elif isinstance(config, dict):
        settings = copy.deepcopy(config)
        origins = {".".join(path): (*key, "config", *path) for path in _paths(settings)}
    elif config is not None:
        raise document.error((*key, "config"), "config is a config file path or a mapping of settings")
    for dotted, value, origin in _overrides(document, entry.get("set"), (*key, "set")):
        _set(settings, dotted, value)
        origins[dotted] = origin
    return StageSpec(index + 1, entry["name"], entry["kind"], settings, origins, key)


def _overrides(document: Document, given: Any, key: Key) -> list[tuple[str, Any, Key]]:
    """``set`` as (dotted key, value, place): a mapping of dotted keys, or KEY=VALUE strings whose
    values are read as YAML, as on the command line."""
    if given is None:
        return []
    if isinstance(given, dict):
        return [(str(name), value, (*key, name)) for name, value in given.items()]
    if not isinstance(given, list):
        raise document.error(key, "set is a mapping of KEY: VALUE or a list of KEY=VALUE")
    found = []
    for index, item in enumerate(given):
        name, sep, text = item.partition("=") if isinstance(item, str) else ("", "", "")
        if not sep or not name:
            raise document.error((*key, index), f"{item!r} is not KEY=VALUE (e.g. train.steps=200)")
        found.append((name, yaml.safe_load(text) if text else "", (*key, index)))
    return found


def _paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key path of every setting and section in nested mappings."""
    paths = []
    for name, value in data.items():
        paths.append((*prefix, str(name)))
        if isinstance(value, dict):
            paths += _paths(value, (*prefix, str(name)))
    return paths


def _set(settings: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested mappings, making the sections on the way."""
    node = settings
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            node[part] = child = {}
        node = child
    node[leaf] = value


def flatten_settings(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{dotted key: value}`` (an empty mapping stays a value): how a plan
    names the setting that changed, and the file the line it was written on."""
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_settings(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat
