"""The dataset format every stage reads and writes, and the items that flow between stages.

A dataset is an HF ``imagefolder``: image files and ``metadata.jsonl`` (``file_name``, ``text``
and our fields, first of all ``id``, the sample's key across all stages). Reading streams the
metadata one line at a time, so memory stays flat in the dataset size; a line that cannot be read
(bad JSON, a caption that is not UTF-8) becomes an item carrying its error, which the stage runner
writes to ``rejects.jsonl`` instead of dropping it silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import IMAGE_EXTENSIONS  # noqa: F401  (part of the dataset format's names)
from edgefusion.paths import member_path

METADATA_FILE = "metadata.jsonl"
REJECTS_FILE = "rejects.jsonl"
STATS_FILE = "stats.json"

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Item:
    """One sample on its way through a stage: its key, metadata row and where its image is.

    The image is a file (``path``) or inline bytes (``data``, e.g. from a tar); ``error`` marks an
    item whose source could not be read, so the runner rejects it with that reason.
    """

    id: str
    row: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    data: bytes | None = None
    error: str | None = None

    @property
    def ext(self) -> str | None:
        name = self.path or self.row.get("file_name") or ""
        suffix = Path(name).suffix.lower().lstrip(".")
        return {"jpeg": "jpg"}.get(suffix, suffix) or None

    def read(self) -> bytes:
        """The image bytes; a missing or unreadable file is an :class:`OSError`."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise OSError("the sample has no image")
        return Path(self.path).read_bytes()


def safe_id(key: str) -> str:
    """A sample key usable as a file name: path separators and odd characters become ``_``."""
    cleaned = _UNSAFE_ID.sub("_", key).strip("._")
    return cleaned or "_"


def has_bad_utf8(text: str) -> bool:
    """Whether text read with ``errors="surrogateescape"`` held bytes that are not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def check_dataset_dir(path: Path) -> Path:
    path = Path(path)
    if not (path / METADATA_FILE).is_file():
        raise EdgefusionError(
            f"{path} is not a dataset folder (no {METADATA_FILE}): run `edgefusion data ingest` first"
        )
    return path


def read_dataset(path: str | Path) -> Iterator[Item]:
    """Stream the items of a dataset folder in ``metadata.jsonl`` order."""
    folder = check_dataset_dir(Path(path))
    with (folder / METADATA_FILE).open("r", encoding="utf-8", errors="surrogateescape") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _item_from_line(folder, number, line)


def _item_from_line(folder: Path, number: int, line: str) -> Item:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return Item(id=f"line-{number:08d}", error=f"bad metadata line {number}: {err.msg}")
    if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
        return Item(id=f"line-{number:08d}", error=f"metadata line {number} has no file_name")
    file_name = row.pop("file_name")
    item_id = safe_id(str(row.pop("id", None) or Path(file_name).stem))
    path, unsafe = member_path(folder, file_name)
    if unsafe:
        return Item(id=item_id, row=row, error=unsafe)
    item = Item(id=item_id, row=row, path=str(path))
    text = row.get("text")
    if isinstance(text, str) and has_bad_utf8(text):
        item.error = "caption is not valid UTF-8"
        row["text"] = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    elif text is not None and not isinstance(text, str):
        item.error = f"caption is not a string: {text!r}"
    return item


def dataset_size(path: str | Path) -> int:
    """Number of samples of a dataset folder (lines of its metadata)."""
    with (check_dataset_dir(Path(path)) / METADATA_FILE).open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def read_stats(path: str | Path) -> dict[str, Any]:
    stats_path = Path(path) / STATS_FILE
    if not stats_path.is_file():
        return {}
    return json.loads(stats_path.read_text(encoding="utf-8"))


def iter_rows(path: str | Path, name: str = METADATA_FILE) -> Iterator[dict[str, Any]]:
    """Stream the JSON objects of a JSONL file of a stage output (metadata or rejects)."""
    file = Path(path) / name
    if not file.is_file():
        return
    with file.open("r", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)
