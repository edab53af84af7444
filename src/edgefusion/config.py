"""The one config mechanism of every stage: typed dataclasses from YAML/JSON and ``key=value`` overrides.

A stage's config is a dataclass that validates itself in ``__post_init__`` (``require``). It loads
from a YAML/JSON file (:func:`load_config`), takes command-line overrides such as
``train.steps=200 loss.feature_weight=0`` (values read as YAML), and is checked field by field on
the way in: an unknown key or a value of the wrong type is an :class:`EdgefusionError` that names
the key. Saved configs (:func:`save_config`, :func:`config_to_dict`) are plain YAML/JSON data, so
a run can tell whether it was made with the same settings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from edgefusion.atomic import write_text_atomic
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_config_mapping

C = TypeVar("C")


def require(condition: bool, message: str) -> None:
    """Raise a config error with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise EdgefusionError(message)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-friendly data (nested dicts, lists, scalars)."""
    return _plain(dataclasses.asdict(config))


def config_from_dict(
    cls: type[C], data: Mapping[str, Any] | None, where: str = "", what: str = "config key"
) -> C:
    """Build ``cls`` from ``data``, checking every key and value; nested configs are mappings.
    ``what`` names a key in the errors (``unknown crop stage setting sise``)."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise EdgefusionError(f"config section {where or 'root'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise EdgefusionError(
            f"unknown {what} {_dotted(where, unknown[0])}: valid keys here are {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], value, _dotted(where, name)) for name, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise EdgefusionError(
            f"config key {_dotted(where, missing[0])} is required: set it in the file or as KEY=VALUE"
        )
    return cls(**values)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return ``data`` with each ``dotted.key=value`` set; values are parsed as YAML (``1e-4``,
    ``null``, ``[1, 2]``, ``true``), so the command line speaks the config file's language."""
    result = _copy_tree(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise EdgefusionError(f"override {override!r} is not KEY=VALUE (e.g. train.steps=200)")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EdgefusionError(f"override {override!r}: {part} is a value, not a section")
        node[leaf] = yaml.safe_load(text) if text else ""
    return result


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), what: str = "config key"
) -> C:
    """The config in the YAML/JSON file ``path`` (defaults where None), then ``overrides``."""
    data = read_config_mapping(path, "config file") if path is not None else {}
    return config_from_dict(cls, apply_overrides(data, overrides), what=what)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the config as YAML, atomically (a temporary file renamed into place)."""
    return write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` as type ``hint``, or a clear error; ints and numeric strings widen to floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except EdgefusionError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise EdgefusionError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise EdgefusionError(f"{where} must be a mapping, got {value!r}")
        key, item = args if args else (Any, Any)
        return {_convert(key, k, where): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise EdgefusionError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is Path and isinstance(value, str):  # a path is written as a string
        return Path(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise EdgefusionError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _copy_tree(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in data.items()}


def _dotted(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
