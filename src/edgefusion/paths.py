"""Paths a user or a dataset names, made safe before anything is read, written or deleted.

Two rules, applied wherever a dataset is read or an output is written:

- A file name inside a dataset (a metadata row's ``file_name``, a prompt file's image name) is
  trusted only when it stays inside the dataset's folder: not absolute, no ``..`` out of it, no
  symlink leading out. :func:`member_path` says why it refuses one; readers reject such a row
  with that reason instead of reading a host file.
- An output folder is resolved (symlinks and ``..`` taken out) before it is checked, so
  ``X/nodir/../victim`` is recognised as ``X/victim``; with ``--overwrite`` it must still not be a
  source of the same command, lie inside one, or contain one (:func:`check_output_apart`),
  because replacing it would destroy that source.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from edgefusion.errors import EdgefusionError


def resolved(path: str | Path) -> Path:
    """``path`` absolute, with symlinks of its existing part followed and ``..`` applied (also
    after parts that do not exist yet: the operating system would apply them once they do)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def member_path(folder: str | Path, name: str) -> tuple[Path | None, str | None]:
    """``(path, None)`` for a file name that stays inside ``folder``, else ``(None, reason)``."""
    if not name or "\x00" in name:
        return None, f"file name {name!r} is empty or holds a NUL byte"
    if Path(name).is_absolute() or name.startswith("~"):
        return None, f"file name {name!r} is absolute: dataset files are named relative to its folder"
    if ".." in Path(name).parts:
        return None, f"file name {name!r} leads out of the dataset folder with '..'"
    base = resolved(folder)
    path = resolved(base / name)
    if not path.is_relative_to(base):
        return None, f"file name {name!r} is a symlink leading out of the dataset folder"
    return path, None


def check_output_apart(out: str | Path, sources: Iterable[str | Path | None], what: str = "--out") -> Path:
    """The resolved ``out``, after checking that it is none of ``sources``, not inside one and not
    a folder that holds one: replacing it (``--overwrite``) would delete that source."""
    target = resolved(out)
    for source in sources:
        if source is None:
            continue
        origin = resolved(source)
        if target == origin or target.is_relative_to(origin) or origin.is_relative_to(target):
            relation = (
                "is" if target == origin else "lies inside" if target.is_relative_to(origin) else "contains"
            )
            raise EdgefusionError(
                f"{what} {out} {relation} the input {source}: writing there would destroy the input; "
                "choose an output folder outside it"
            )
    return target
