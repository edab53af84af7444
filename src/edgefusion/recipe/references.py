"""How one stage of a recipe names what another made: ``${NAME}``, ``${STAGE.out}``, ``${STAGE.dir}``.

Three forms, nothing else, so that every reference can be checked before a stage runs:

- ``${NAME}``: an entry of the recipe's ``inputs`` mapping (the teacher, the KD teacher, ...);
- ``${STAGE.out}``: what an earlier stage made (a model folder, a dataset, a metrics folder);
- ``${STAGE.dir}``: a stage's own folder under the recipe's output, for things a stage keeps
  beside its output (a latent cache); a stage may name its own folder this way.

A reference may stand alone (``student: ${distill.out}``) or inside a longer string
(``${distill.dir}/cache``). References to stages are what tie a stage to the ones before it: its
fingerprint includes theirs, so a stage is redone when a stage it names changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from edgefusion.errors import EdgefusionError

#: Where a reference may point inside a stage: its output, or its folder.
STAGE_FIELDS = ("out", "dir")
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_NAME = r"[A-Za-z_][\w-]*"
_FORM = re.compile(rf"({_NAME})(?:\.({'|'.join(STAGE_FIELDS)}))?")


@dataclass(frozen=True)
class Reference:
    """One parsed ``${...}``: ``name`` with ``field`` None is an input, else a stage's field."""

    text: str
    name: str
    field: str | None

    @property
    def is_stage(self) -> bool:
        return self.field is not None


def parse_references(text: str) -> list[Reference]:
    """The references inside one string; a ``${...}`` of no known form is an error saying which
    forms there are."""
    found = []
    for match in _REFERENCE.finditer(text):
        form = _FORM.fullmatch(match.group(1).strip())
        if form is None:
            raise EdgefusionError(
                f"{match.group(0)} is not a reference: use ${{NAME}} (an input), ${{STAGE.out}} or "
                "${STAGE.dir}"
            )
        found.append(Reference(match.group(0), form.group(1), form.group(2)))
    return found


def references_in(value: Any, key: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple, Reference]]:
    """``(key path, reference)`` of every reference in the strings of a nested value."""
    if isinstance(value, str):
        for reference in parse_references(value):
            yield key, reference
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from references_in(item, (*key, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references_in(item, (*key, index))


def substitute(value: Any, resolve: Callable[[Reference], str | None]) -> Any:
    """``value`` with each reference replaced by ``resolve(reference)``; references it returns
    None for stay as written (a fingerprint keeps stage references as text)."""
    if isinstance(value, str):
        for reference in parse_references(value):
            replacement = resolve(reference)
            if replacement is not None:
                value = value.replace(reference.text, replacement)
        return value
    if isinstance(value, dict):
        return {name: substitute(item, resolve) for name, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, resolve) for item in value]
    return value
