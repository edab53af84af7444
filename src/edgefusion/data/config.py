"""Stage configs: validated dataclasses that load from YAML/JSON and are saved next to outputs.

One config class per stage; a config in a file and options on the command line are
merged the same way, so ``edgefusion data run pipeline.yaml`` and ``edgefusion data STAGE`` agree.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_config_mapping

C = TypeVar("C")


def _coerce(value: Any, annotation: Any) -> Any:
    """Lists from YAML become tuples where the field is a tuple; everything else is kept as is."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(value, options[0]) if value is not None and len(options) == 1 else value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def config_from_dict(cls: type[C], values: Mapping[str, Any] | None, what: str) -> C:
    """Build ``cls`` from a mapping, refusing unknown keys (likely typos) with the known ones."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EdgefusionError(
            f"unknown {what} setting(s) {', '.join(unknown)}: use {', '.join(sorted(known))}"
        )
    try:
        return cls(**{k: _coerce(v, hints[k]) for k, v in values.items()})
    except (TypeError, ValueError) as err:
        raise EdgefusionError(f"bad {what} settings: {err}") from None


def config_from_file(cls: type[C], path: str | Path, what: str) -> C:
    """Load ``cls`` from a YAML or JSON file."""
    return config_from_dict(cls, read_config_mapping(path, f"{what} config"), what)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples as lists), as saved in ``stats.json``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def merge_options(config: C, **overrides: Any) -> C:
    """``config`` with the command-line options that were given (not None) on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, **given) if given else config


def require(condition: bool, message: str) -> None:
    """Raise a config error with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise EdgefusionError(message)


def import_object(spec: str, what: str) -> Any:
    """The object named ``package.module:attribute``: how users plug in scorers and captioners."""
    import importlib

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise EdgefusionError(f"unknown {what} {spec!r}: use a built-in name or package.module:attribute")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise EdgefusionError(f"cannot load {what} {spec!r} ({err}): check the module path") from None
