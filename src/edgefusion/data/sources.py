"""Readers of raw datasets for ``ingest``: image folders, CSV/parquet tables, WebDataset tars.

Each yields :class:`~edgefusion.data.dataset.Item` objects in a stable order and streams (a
parquet file batch by batch, a tar member by member), so memory does not grow with the input.
What cannot be read becomes an item with an ``error`` (a reject), never an exception.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgefusion.data.dataset import METADATA_FILE, Item, has_bad_utf8, read_dataset, safe_id
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import IMAGE_EXTENSIONS
from edgefusion.paths import member_path

FORMATS = ("auto", "imagefolder", "csv", "parquet", "webdataset")
CAPTION_KEYS = ("txt", "text", "caption")


def detect_format(path: Path) -> str:
    """The source format of ``path``: a folder of images, a table file, or tar shards."""
    if path.is_dir():
        if (path / METADATA_FILE).exists() or any(
            p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()
        ):
            return "imagefolder"
        if any(p.suffix == ".tar" for p in path.iterdir()):
            return "webdataset"
        if any(
            Path(name).suffix.lower() in IMAGE_EXTENSIONS for _, _, files in os.walk(path) for name in files
        ):
            return "imagefolder"  # images in subfolders only (img2dataset's layout)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".tar":
        return "webdataset"
    raise EdgefusionError(
        f"cannot tell the format of {path}: give an image folder, a .csv/.parquet table or .tar shards"
    )


def read_source(
    path: str | Path, fmt: str = "auto", path_column: str = "path", caption_column: str = "caption"
):
    """Items of a raw dataset in format ``fmt`` (``auto`` guesses from the path)."""
    path = Path(path)
    if not path.exists():
        raise EdgefusionError(f"input {path} not found: check the path")
    if fmt not in FORMATS:
        raise EdgefusionError(f"unknown input format {fmt!r}: use one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "imagefolder":
        return read_imagefolder(path)
    if fmt == "csv":
        return read_csv(path, path_column, caption_column)
    if fmt == "parquet":
        return read_parquet(path, path_column, caption_column)
    return read_webdataset(path)


def read_imagefolder(folder: Path) -> Iterator[Item]:
    """An imagefolder with ``metadata.jsonl``, or plain images with optional same-name ``.txt``
    captions (the img2dataset layout, which shards images into subfolders), in path order.

    Images in subfolders are samples like the others (id: their path, ``sub/a.png`` -> ``sub_a``),
    so every image under ``folder`` ends up kept or rejected with a reason, none skipped unseen.
    """
    if (folder / METADATA_FILE).exists():
        yield from read_dataset(folder)
        return
    for image in _images_under(folder):
        name = image.relative_to(folder).as_posix()
        path, unsafe = member_path(folder, name)
        item_id = safe_id(name.rsplit(".", 1)[0])
        item = Item(id=item_id, row={"source": name}, path=path and str(path), error=unsafe)
        sidecar = image.with_suffix(".txt")
        if sidecar.exists():
            _set_caption(item, sidecar.read_bytes(), sidecar.name)
        yield item


def _images_under(folder: Path) -> list[Path]:
    """Image files under ``folder`` and its subfolders (symlinked folders are not followed: they
    may lead out of it), sorted by path."""
    images = [
        Path(root) / name
        for root, _, files in os.walk(folder)
        for name in files
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(images, key=lambda path: path.relative_to(folder).parts)


def _set_caption(item: Item, raw: bytes, where: str) -> None:
    try:
        item.row["text"] = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        item.error = f"caption is not valid UTF-8 ({where})"


def _table_item(
    index: int, base: Path, record: dict[str, Any], path_column: str, caption_column: str
) -> Item:
    raw_path = record.get(path_column)
    item_id = f"{index:08d}"
    if not isinstance(raw_path, str) or not raw_path:
        return Item(id=item_id, error=f"row {index} has no {path_column!r} value")
    image_path = Path(raw_path) if Path(raw_path).is_absolute() else base / raw_path
    text = record.get(caption_column)
    extra = {k: v for k, v in record.items() if k not in (path_column, caption_column)}
    item = Item(id=item_id, row={"text": text, "source": raw_path, **extra}, path=str(image_path))
    if isinstance(text, str) and has_bad_utf8(text):
        item.error = "caption is not valid UTF-8"
        item.row["text"] = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    elif text is not None and not isinstance(text, str):
        item.row["text"] = str(text)
    if any(isinstance(v, str) and has_bad_utf8(v) for v in item.row.values()):
        item.error = item.error or "a metadata value is not valid UTF-8"
        item.row = {
            k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if isinstance(v, str) else v
            for k, v in item.row.items()
        }
    return item


def read_csv(path: Path, path_column: str, caption_column: str) -> Iterator[Item]:
    """Rows of a CSV (or TSV) table; image paths are relative to the table's folder."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        if reader.fieldnames is None or path_column not in reader.fieldnames:
            raise EdgefusionError(f"{path} has no {path_column!r} column: name it with --path-column")
        for index, record in enumerate(reader):
            yield _table_item(index, path.parent, record, path_column, caption_column)


def read_parquet(path: Path, path_column: str, caption_column: str) -> Iterator[Item]:
    """Rows of a parquet table, read one record batch at a time."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    if path_column not in table.schema_arrow.names:
        raise EdgefusionError(f"{path} has no {path_column!r} column: name it with --path-column")
    index = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield _table_item(index, path.parent, record, path_column, caption_column)
            index += 1


def _split_member(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _sample_item(shard: Path, key: str, members: dict[str, bytes]) -> Item:
    item = Item(id=safe_id(key), row={"source": f"{shard.name}:{key}"})
    image_ext = next((e for e in members if f".{e}" in IMAGE_EXTENSIONS), None)
    if image_ext is None:
        item.error = f"no image in tar sample {key} (members: {', '.join(sorted(members))})"
        return item
    item.data = members[image_ext]
    item.row["file_name"] = f"{key}.{image_ext}"
    if "json" in members:
        try:
            extra = json.loads(members["json"].decode("utf-8"))
            if isinstance(extra, dict):
                item.row.update({k: v for k, v in extra.items() if k not in ("file_name", "id")})
        except (UnicodeDecodeError, json.JSONDecodeError):
            item.error = f"bad json member in tar sample {key}"
    caption_key = next((k for k in CAPTION_KEYS if k in members), None)
    if caption_key is not None:
        _set_caption(item, members[caption_key], f"{key}.{caption_key}")
    return item


def read_webdataset(path: Path) -> Iterator[Item]:
    """Samples of WebDataset tar shards (a .tar or a folder of them, in name order), streamed."""
    shards = sorted(path.glob("*.tar")) if path.is_dir() else [path]
    for shard in shards:
        key, members = None, {}
        try:
            with tarfile.open(shard, "r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    member_key, ext = _split_member(member.name)
                    if key is not None and member_key != key:
                        yield _sample_item(shard, key, members)
                        members = {}
                    key = member_key
                    members[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as err:
            yield Item(id=safe_id(f"{shard.stem}-unreadable"), error=f"unreadable tar {shard.name}: {err}")
        if key is not None and members:
            yield _sample_item(shard, key, members)
