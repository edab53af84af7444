"""Prompt files for evaluation: BK-SDM's COCO-30K ``metadata.csv``, any CSV / JSONL, or plain text,
or the name of a prompt set a world registers (the toy world's ``eval`` and ``val``), so that
every command's ``--prompts`` takes a file or a name.

BK-SDM names each generated image after the COCO file it stands for (``file_name`` column), so a
folder it generated can be scored against the same file; prompts without a file name map to
``{index:05d}.png``, the names ``edgefusion.generate`` writes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_text_file
from edgefusion.limits import check_limit
from edgefusion.paths import member_path

#: Columns (or JSON keys) read as the prompt, in order of preference.
TEXT_FIELDS = ("text", "caption", "prompt")

#: Named prompt sets: ``{name: function giving its file}``, called only when the name is used.
PROMPT_SETS: dict[str, Callable[[], Path]] = {}


def register_prompt_set(name: str, path: Callable[[], Path]) -> None:
    """Let ``--prompts NAME`` stand for the file ``path()`` wherever prompts are read."""
    PROMPT_SETS[name] = path


def prompt_file(path: str | Path) -> Path:
    """The file ``path`` names: a registered prompt set's, unless a file of that name exists."""
    name = str(path)
    if name in PROMPT_SETS and not Path(name).exists():
        return PROMPT_SETS[name]()
    return Path(path).expanduser()


@dataclass(frozen=True)
class PromptRow:
    text: str
    file_name: str | None = None


def _from_records(records: list, path: Path) -> list[PromptRow]:
    """Prompt rows of table or JSONL records; a row that is no mapping, has no prompt text or names
    its image with something other than a string is an error naming the row."""
    if not records:
        return []
    if not isinstance(records[0], dict):
        raise EdgefusionError(f"{path} row 1 is not an object with a text field: {records[0]!r}")
    field = next((f for f in TEXT_FIELDS if f in records[0]), None)
    if field is None:
        raise EdgefusionError(
            f"{path} has no prompt column: name one of {', '.join(TEXT_FIELDS)} "
            f"(found {', '.join(records[0])})"
        )
    rows = []
    for number, record in enumerate(records, start=1):
        text = record.get(field) if isinstance(record, dict) else None
        file_name = record.get("file_name") if isinstance(record, dict) else None
        if not isinstance(text, str) or not isinstance(file_name, str | None):
            raise EdgefusionError(
                f"{path} row {number} needs a text {field!r} and, if any, a file_name string: {record!r}"
            )
        rows.append(PromptRow(text, file_name or None))
    return rows


def read_prompts(path: str | Path, limit: int | None = None) -> list[PromptRow]:
    """Prompts of ``path`` (``.csv``, ``.jsonl``, else one prompt per non-empty line), first ``limit``."""
    check_limit(limit, "the number of prompts")
    path = prompt_file(path)
    text = read_text_file(path, "prompt file")
    if path.suffix == ".csv":
        rows = _from_records(list(csv.DictReader(text.splitlines())), path)
    elif path.suffix == ".jsonl":
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise EdgefusionError(f"{path} is not valid JSONL ({err})") from err
        rows = _from_records(records, path)
    else:
        rows = [PromptRow(line.strip()) for line in text.splitlines() if line.strip()]
    if not rows:
        raise EdgefusionError(f"prompt file {path} has no prompts")
    return rows[:limit]


def image_names(rows: list[PromptRow], n: int, folder: Path | None = None) -> list[str]:
    """File name of each image: ``{k:05d}.png`` for image ``k = prompt_index * n + j``, or the rows'
    ``file_name`` when ``folder`` (an existing image folder) holds images named that way and every
    name stays inside it (a prompt file cannot name ``../x.png``)."""
    named = n == 1 and all(r.file_name and member_path(folder or ".", r.file_name)[0] for r in rows)
    if named and folder is not None and (folder / rows[0].file_name).exists():
        return [r.file_name for r in rows]
    return [f"{k:05d}.png" for k in range(len(rows) * n)]
