"""The inference layer's plug-in points: model names and backends, filled by the packages above it.

``edgefusion.pipeline`` is the bottom layer of inference: quantization, export and the toy world
import it, never the other way round. Yet ``load_pipeline("toy:edgefusion")`` must find a shipped
folder, a W8A16 folder must load with its int8 U-Net, and ``--backend onnxruntime`` must find
onnxruntime. So each of those packages registers what it provides here when it is imported (the
command line imports them all before a command runs), and the loaders read these tables.

This module imports nothing heavy: registering costs a plug-in no torch or diffusers import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefusion.errors import EdgefusionError


@dataclass(frozen=True)
class ModelSource:
    """Model names that start with ``prefix`` (``toy:``): ``resolve(name)`` turns the part after
    the prefix into a folder; ``example`` is a name to show in errors."""

    prefix: str
    resolve: Callable[[str], Path]
    example: str


@dataclass(frozen=True)
class Backend:
    """How pipelines run: ``load(path, dtype=..., scheduler=...)`` returns a pipeline with the call
    signature of a diffusers one. ``claims(path)``, when set, recognizes folders that only this
    backend can load: a plain torch load of such a folder is handed to it (a W8A16 folder)."""

    name: str
    load: Callable[..., Any]
    claims: Callable[[Path], bool] | None = None


_SOURCES: dict[str, ModelSource] = {}
_BACKENDS: dict[str, Backend] = {}


def register_model_source(prefix: str, resolve: Callable[[str], Path], example: str) -> None:
    """Make ``prefix + NAME`` a model name wherever a model folder is accepted."""
    _SOURCES[prefix] = ModelSource(prefix, resolve, example)


def model_source(spec: str) -> ModelSource | None:
    """The registered source whose prefix ``spec`` starts with, if any."""
    return next((s for p, s in _SOURCES.items() if spec.startswith(p)), None)


def name_examples() -> list[str]:
    """One example name per registered model source, for error messages."""
    return [source.example for source in _SOURCES.values()]


def register_backend(
    name: str, load: Callable[..., Any], claims: Callable[[Path], bool] | None = None
) -> None:
    """Make ``name`` a backend of :func:`edgefusion.pipeline.load.load_pipeline`."""
    _BACKENDS[name] = Backend(name, load, claims)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; an error lists the registered ones."""
    if name not in _BACKENDS:
        raise EdgefusionError(f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}")
    return _BACKENDS[name]


def claiming_backend(path: Path) -> Backend | None:
    """The backend that claims folder ``path`` as its own format, if any."""
    return next((b for b in _BACKENDS.values() if b.claims is not None and b.claims(path)), None)
