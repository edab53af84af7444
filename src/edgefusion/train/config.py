"""Stage configs as dataclasses: YAML round trip, ``key=value`` overrides, type checks.

Every training stage (``distill``, ``lcm``) has one config dataclass built from the shared pieces
here (:class:`DataConfig`, :class:`LoopConfig`). A config loads from a YAML/JSON file, takes
command-line overrides such as ``train.steps=200 loss.feature_weight=0``, is checked field by field
(unknown keys and wrong types name the fix), and is saved next to the checkpoints it produced.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_config_mapping

C = TypeVar("C")

MixedPrecision = Literal["no", "fp16", "bf16"]
LRSchedule = Literal["constant", "cosine"]


@dataclasses.dataclass
class DataConfig:
    """Where training pairs come from, and the optional cache of their frozen encodings.

    ``path``: an HF imagefolder (images + ``metadata.jsonl``), one WebDataset ``.tar`` shard, or a
    folder of shards. ``cache``: a folder for VAE latents and text embeddings, built on first use
    with the frozen VAE and text encoder and reused while they and the data are unchanged.
    ``resolution``: image side in pixels; None takes the teacher pipeline's native size.
    ``sample_posterior``: train on latents sampled from each image's VAE posterior (SD's and
    BK-SDM's way); false trains on the posterior means. SD's VAE has a posterior so narrow that the
    two agree; a VAE whose posterior std is a sizeable share of the latents' spread (the toy VAE's
    is a fifth) adds that noise to every target, which the model cannot predict.
    """

    path: str = ""
    caption_column: str = "text"
    resolution: int | None = None
    cache: str | None = None
    cache_shard_size: int = 1024
    num_workers: int = 0
    sample_posterior: bool = True

    def __post_init__(self) -> None:
        _check(self.resolution is None or self.resolution >= 8, "data.resolution must be at least 8")
        _check(self.cache_shard_size >= 1, "data.cache_shard_size must be at least 1")
        _check(self.num_workers >= 0, "data.num_workers must be 0 or more")


@dataclasses.dataclass
class LoopConfig:
    """The optimization shared by every training stage (defaults: BK-SDM's published recipe).

    ``batch_size`` is per device and per micro-batch; the effective batch is ``batch_size x
    gradient_accumulation x processes``. The learning rate warms up linearly for
    ``lr_warmup_steps`` optimizer steps, then stays constant. ``ema_decay`` None disables EMA.
    """

    steps: int = 1000
    batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 5e-5
    lr_warmup_steps: int = 0
    lr_schedule: LRSchedule = "constant"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: MixedPrecision = "no"
    ema_decay: float | None = 0.9999
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation", "checkpoint_every", "keep_checkpoints"):
            _check(getattr(self, name) >= 1, f"train.{name} must be at least 1")
        _check(self.learning_rate > 0, "train.learning_rate must be positive")
        _check(self.lr_warmup_steps >= 0, "train.lr_warmup_steps must be 0 or more")
        _check(self.max_grad_norm > 0, "train.max_grad_norm must be positive")
        _check(
            self.ema_decay is None or 0 < self.ema_decay < 1,
            "train.ema_decay must lie between 0 and 1 (or be null to disable EMA)",
        )


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-friendly data (nested dicts, lists, scalars)."""
    return _plain(dataclasses.asdict(config))


def config_from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build ``cls`` from ``data``, checking every key and value; nested configs are dicts."""
    if not isinstance(data, dict):
        raise EdgefusionError(f"config section {where or 'root'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise EdgefusionError(
            f"unknown config key {_dotted(where, unknown[0])}: valid keys here are {', '.join(fields)}"
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


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """The config in the YAML/JSON file ``path`` (defaults where None), then ``overrides``."""
    data = read_config_mapping(path, "config file") if path is not None else {}
    return config_from_dict(cls, apply_overrides(data, overrides))


def save_config(config: Any, path: str | Path) -> Path:
    """Write the config as YAML, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


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
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise EdgefusionError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
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
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _copy_tree(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in data.items()}


def _dotted(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise EdgefusionError(message)
