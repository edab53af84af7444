"""Write an output folder all at once: build it under a temporary name, then rename it.

A crash or an error half-way through a save must never leave a folder that looks like a model
but is not one (stages hand off through folders on disk, so a folder that exists is taken as finished).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgefusion.errors import EdgefusionError
from edgefusion.paths import check_output_apart, resolved


def make_output_dir(path: Path) -> Path:
    """Create the folder ``path`` (and its parents); a read-only place or a file in the way is an
    error naming the folder, not an ``OSError`` from deep in a stage."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EdgefusionError(
            f"cannot create the output folder {path} ({err.strerror or err}): choose a writable folder"
        ) from None
    return path


def check_output_free(out: Path, overwrite: bool, sources: Iterable[str | Path | None] = ()) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and an ``out`` that is, holds or lies in one
    of the command's ``sources``; call before any long work. ``out`` is resolved first, so
    ``a/nodir/../b`` is checked as the ``a/b`` it will become."""
    if check_output_apart(out, sources).exists() and not overwrite:
        raise EdgefusionError(f"{out} already exists: choose another output folder or pass --overwrite")


@contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``out``; it becomes ``out`` only if the block ends
    without error (replacing an old ``out`` when ``overwrite``), and is deleted otherwise."""
    out = resolved(out)
    check_output_free(out, overwrite)
    make_output_dir(out.parent)
    staging = make_output_dir(out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        retired = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        out.rename(retired)
        staging.rename(out)
        if retired.is_dir():
            shutil.rmtree(retired)
        else:
            retired.unlink()
    else:
        staging.rename(out)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file name next to ``path`` to write; it is renamed over ``path`` only if
    the block ends without error, and deleted otherwise, so a reader never sees half a file (a
    record of progress that a crash cut short would be worse than none). The name ends in
    ``.tmp`` and starts with a dot, so leftovers of a killed process are easy to sweep."""
    path = Path(path)
    make_output_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write the text file ``path`` whole or not at all (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
