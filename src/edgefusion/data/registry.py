"""The curation stages' plug-in points: captioners, prompt sources, renderers and scorers by name.

The stages caption, prompt, render and score with models and worlds they do not import. A world
registers what it provides here when it is imported (the toy world: the captioner ``toy``, the
prompt source ``toy``, the renderer ``toy:render`` and the curation scorer ``toy``; the command
line imports it before any command runs), and a stage looks up the name its config gives.

A stage looks its plug-in up in the process that starts the run and hands the function itself to
its workers: a spawned worker has not imported the world that registered it, but unpickling the
function imports the module that defines it.

This module imports nothing heavy: registering costs a plug-in no torch import.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Generic, TypeVar

from edgefusion.data.config import import_object
from edgefusion.errors import EdgefusionError

T = TypeVar("T")

#: ``(list of PIL images) -> list of captions``.
Captioner = Callable[[list[Any]], list[str]]
#: ``(prompts, seeds, size) -> [(PIL image, attribute record or None)]``: images without a model.
Renderer = Callable[[list[str], list[int], int], list[tuple[Any, dict[str, Any] | None]]]
#: ``(list of PIL images, their captions) -> one dict of scores per image``.
Scorer = Callable[[list[Any], list[str]], list[dict[str, Any]]]


class PlugIns(Generic[T]):
    """Named plug-ins of one kind (``what`` names the kind in errors)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, plugin: T) -> None:
        self._entries[name] = plugin

    def names(self) -> list[str]:
        return list(self._entries)

    def find(self, name: str) -> T | None:
        """The plug-in registered as ``name``, or None."""
        return self._entries.get(name)

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``, else the object a ``package.module:attribute`` name
        points to (a user's own); an error says which names are known."""
        if name in self._entries:
            return self._entries[name]
        if ":" not in name:
            known = ", ".join([*self._entries, "package.module:attribute"])
            raise EdgefusionError(
                f"unknown {self.what} {name!r}: use {known} (a world's own are known once its package "
                "is imported, as the command line does)"
            )
        return import_object(name, self.what)


@lru_cache(maxsize=8)
def built_once(factory: Callable[[str], T], argument: str) -> T:
    """What ``factory(argument)`` makes (a captioner of a model, a scorer of an evaluator), built
    once per process: a worker loads the model once for all its chunks."""
    return factory(argument)


#: ``factory(model) -> Captioner``, by the ``captioner`` name of ``data caption``.
CAPTIONERS: PlugIns[Callable[[str], Captioner]] = PlugIns("captioner")
#: ``prompts(n, seed) -> n prompts``, by the ``prompts`` name of ``data synthesize``.
PROMPT_SOURCES: PlugIns[Callable[[int, int], list[str]]] = PlugIns("prompt source")
#: Generators of ``data synthesize`` that draw without a model (any other name is a model).
RENDERERS: PlugIns[Renderer] = PlugIns("renderer")
#: ``factory(evaluator) -> Scorer``, by the ``scorer`` name of ``data curate``.
SCORERS: PlugIns[Callable[[str], Scorer]] = PlugIns("curation scorer")
