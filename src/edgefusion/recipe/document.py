"""A recipe file read with the line of every value, so an error can point at the line to fix.

A recipe is checked whole before any stage runs, and a message such as "unknown setting
train.stepz" is only useful with the place it comes from. PyYAML's composer keeps a start mark on
every node; :func:`read_document` walks the composed node tree beside the loaded data and keeps
the 1-based line of each key (or list item) under its path of keys and indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import first_line, read_text_file

Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """The data of a YAML file and the line of each of its values, by path of keys."""

    path: Path
    data: Any
    lines: dict[Key, int]

    def line(self, key: Key) -> int:
        """The line of ``key``, or of its deepest parent the file spells (a key set by a config
        file that the recipe points to has no line of its own: its parent's is the place to look)."""
        while key and key not in self.lines:
            key = key[:-1]
        return self.lines.get(key, 1)

    def error(self, key: Key, message: str) -> EdgefusionError:
        """A user error naming this file and the line of ``key``."""
        return EdgefusionError(f"{self.path}:{self.line(key)}: {message}")


def read_document(path: str | Path, what: str = "recipe file") -> Document:
    """Load the YAML file ``path`` with the line of every value; invalid YAML is an error naming
    its line."""
    path = Path(path)
    text = read_text_file(path, what)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise EdgefusionError(f"{where}: {what} is not valid YAML ({first_line(err)})") from None
    lines: dict[Key, int] = {}
    if node is not None:
        _collect_lines(node, (), lines)
    return Document(path, data, lines)


def _collect_lines(node: yaml.Node, key: Key, lines: dict[Key, int]) -> None:
    """Record the line of ``node`` under ``key``, then of everything below it."""
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*key, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _collect_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, (*key, index), lines)
