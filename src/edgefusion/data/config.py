"""What the data stages add to the shared config mechanism (:mod:`edgefusion.config`).

One config class per stage, loaded and checked by :mod:`edgefusion.config`; a config in a file and
options on the command line are merged the same way, so ``edgefusion data run pipeline.yaml`` and
``edgefusion data STAGE`` agree.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from edgefusion.errors import EdgefusionError

C = TypeVar("C")


def merge_options(config: C, **overrides: Any) -> C:
    """``config`` with the command-line options that were given (not None) on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, **given) if given else config


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
