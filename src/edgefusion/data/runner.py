"""Run a stage over a stream of items: chunked, resumable, on a process pool or on Ray Data.

The input is cut into chunks of ``chunk_size`` items in input order. A chunk is processed (on any
worker), its image files are written, and then its rows are committed as one progress file,
renamed into place. A re-run skips committed chunks and redoes the rest, overwriting any files a
killed run left half-written, and the final ``metadata.jsonl`` and ``rejects.jsonl`` are the
committed chunks concatenated in chunk order. So the output does not depend on when a run was
killed, on the number of workers or on the engine: each chunk is a pure function of its items.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from edgefusion.atomic import atomic_file, make_output_dir, write_text_atomic
from edgefusion.config import config_to_dict
from edgefusion.data.dataset import (
    METADATA_FILE,
    REJECTS_FILE,
    STATS_FILE,
    Item,
    dataset_size,
    read_dataset,
    read_stats,
)
from edgefusion.data.images import DecodedImage, ImageRejected, decode_image
from edgefusion.errors import EdgefusionError
from edgefusion.paths import check_output_apart

ENGINES = ("local", "ray")
_PROGRESS = ".progress"


@dataclass
class RunOptions:
    """How a stage runs (not what it does): parallelism, engine, chunking, overwrite, progress bar."""

    workers: int = 1
    engine: str = "local"
    chunk_size: int = 256
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise EdgefusionError(f"unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if self.workers < 1 or self.chunk_size < 1:
            raise EdgefusionError("workers and chunk_size must be at least 1")


@dataclass
class Outcome:
    """What a stage decided for one item: keep it (``row``, maybe new image bytes) or reject it.

    ``data`` None keeps the item's image bytes as they are; ``ext`` names the new bytes' format.
    """

    id: str
    row: dict[str, Any] | None = None
    data: bytes | None = None
    ext: str | None = None
    reason: str | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def rejected(cls, item_id: str, reason: str, details: dict[str, Any] | None = None) -> Outcome:
        """A reject; ``details`` (e.g. the kept duplicate) go to ``rejects.jsonl`` with the reason."""
        return cls(id=item_id, reason=reason, details=details)


def read_image(item: Item, max_pixels: int) -> tuple[bytes, DecodedImage] | Outcome:
    """``item``'s bytes and decoded image, or the outcome that rejects it: a file that cannot be
    read, or an image :func:`~edgefusion.data.images.decode_image` refuses (with its reason)."""
    try:
        data = item.read()
        return data, decode_image(data, max_pixels)
    except OSError as err:
        return Outcome.rejected(item.id, f"unreadable file: {err.strerror or err}")
    except ImageRejected as err:
        return Outcome.rejected(item.id, str(err))


def read_images(items: list[Item], max_pixels: int) -> tuple[list[tuple[Item, Any]], dict[str, Outcome]]:
    """The items whose images decode, each with its RGB image, and the rejects of the others."""
    readable, rejected = [], {}
    for item in items:
        read = read_image(item, max_pixels)
        if isinstance(read, Outcome):
            rejected[item.id] = read
        else:
            readable.append((item, read[1].image))
    return readable, rejected


class Stage(Protocol):
    """A stage: a name, a config dataclass and a pure function from a chunk of items to outcomes.

    ``writes_images`` False makes a stage that only computes rows (e.g. hashes) write no files.
    Stage objects are pickled to workers, so they hold configs, never loaded models.
    """

    name: str
    config: Any
    writes_images: bool

    def process(self, items: list[Item]) -> list[Outcome]: ...


@dataclass
class ChunkResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)


def process_chunk(stage: Stage, out_dir: str, items: list[Item]) -> ChunkResult:
    """Run ``stage`` on one chunk and write its kept images into ``out_dir``; pure in its items."""
    result = ChunkResult()
    readable = [item for item in items if item.error is None]
    outcomes = {o.id: o for o in stage.process(readable)} if readable else {}
    for item in items:
        if item.error is not None:
            result.rejects.append(_reject_row(stage, item, item.error))
            continue
        outcome = outcomes[item.id]
        if outcome.reason is not None:
            result.rejects.append(_reject_row(stage, item, outcome.reason, outcome.details))
            continue
        row = {"id": item.id, **(outcome.row if outcome.row is not None else item.row)}
        row.pop("file_name", None)
        if stage.writes_images:
            try:
                data = outcome.data if outcome.data is not None else item.read()
            except OSError as err:
                result.rejects.append(_reject_row(stage, item, f"unreadable file: {err.strerror or err}"))
                continue
            file_name = f"{item.id}.{outcome.ext or item.ext or 'png'}"
            with atomic_file(Path(out_dir) / file_name) as tmp:
                tmp.write_bytes(data)
            row = {"file_name": file_name, **row}
        result.rows.append(row)
    return result


def _reject_row(
    stage: Stage, item: Item, reason: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    row = {"id": item.id, "stage": stage.name, "reason": reason, **(details or {})}
    if item.path is not None:
        row["source"] = item.path
    return row


def unique_ids(items: Iterable[Item]) -> Iterator[Item]:
    """``items`` with every repeated id rejected (and renamed ``ID~N``): a kept sample's files and
    row are named by its id, so a second sample with the same id would silently overwrite the
    first's file while both rows stay. Holds the ids seen (about 100 bytes per sample)."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen and item.error is None:
            item.error = f"duplicate sample id {item.id}"
            item.id = f"{item.id}~{len(seen)}"
        seen.add(item.id)
        yield item


def chunked(items: Iterable[Item], size: int) -> Iterator[tuple[int, list[Item]]]:
    """(chunk index, items) in input order; chunk ``i`` always holds the same items."""
    chunk: list[Item] = []
    index = 0
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield index, chunk
            chunk, index = [], index + 1
    if chunk:
        yield index, chunk


def _map_local(
    fn: Callable[[list[Item]], ChunkResult], chunks: Iterator[tuple[int, list[Item]]], workers: int
):
    """Ordered map over chunks; with workers > 1 a spawn process pool keeps at most 2 chunks per
    worker in flight, so memory stays flat however long the input is."""
    if workers == 1:
        for index, chunk in chunks:
            yield index, fn(chunk)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        window: deque = deque()
        for index, chunk in chunks:
            window.append((index, pool.submit(fn, chunk)))
            if len(window) >= 2 * workers:
                done_index, future = window.popleft()
                yield done_index, future.result()
        while window:
            done_index, future = window.popleft()
            yield done_index, future.result()


def _ray_chunk(fn: Callable[[list[Item]], ChunkResult], row: dict[str, Any]) -> dict[str, Any]:
    return {"index": row["index"], "result": pickle.dumps(fn(pickle.loads(row["items"])))}


def _map_ray(fn: Callable[[list[Item]], ChunkResult], chunks: Iterator[tuple[int, list[Item]]], workers: int):
    """The same chunk function on Ray Data, a window of chunks per dataset, in chunk order."""
    try:
        import ray
    except ImportError:
        raise EdgefusionError("the ray engine needs Ray: pip install 'edgefusion[ray]'") from None
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    window = 8 * workers
    batch: list[dict[str, Any]] = []

    def run(batch: list[dict[str, Any]]):
        dataset = ray.data.from_items(batch).map(partial(_ray_chunk, fn), concurrency=workers)
        for row in dataset.iter_rows():
            yield row["index"], pickle.loads(row["result"])

    for index, chunk in chunks:
        batch.append({"index": index, "items": pickle.dumps(chunk)})
        if len(batch) == window:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)


def _staging_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _check_resumable(staging: Path, fingerprint: dict[str, Any]) -> None:
    """A partial output may be resumed only by the same stage, config and input."""
    marker = staging / _PROGRESS / "stage.json"
    if marker.exists():
        if json.loads(marker.read_text(encoding="utf-8")) != fingerprint:
            raise EdgefusionError(
                f"{staging} holds a partial run with other settings: delete it or pass --overwrite"
            )
        return
    make_output_dir(marker.parent)
    marker.write_text(json.dumps(fingerprint, indent=2), encoding="utf-8")


def finished_output(
    name: str, config: Any, source: str | None, out: Path, options: RunOptions
) -> dict[str, Any] | None:
    """The checks before a stage writes ``out``, done before any of its work: ``out`` must stay
    apart from the input. A finished ``out`` made by this stage, config and input is kept (its
    stats are returned: re-running skips it) unless ``overwrite``; one made by another stage,
    config or input, or a folder that is no finished output, is an error. None: go ahead."""
    out = check_output_apart(out, [source])
    if stage_done(out) and not options.overwrite:
        stats = read_stats(out)
        made_by = {"stage": name, "config": config_to_dict(config), "input": source}
        changed = [key for key, value in made_by.items() if stats.get(key) != value]
        if changed:
            raise EdgefusionError(
                f"{out} holds a finished run with another {' and '.join(changed)}: choose another --out, "
                "or pass --overwrite to redo it"
            )
        return stats
    if out.exists() and not options.overwrite:
        raise EdgefusionError(
            f"{out} exists but is not a finished stage output: choose another --out or --overwrite"
        )
    return None


def stage_done(out: Path) -> bool:
    """A stage output is complete once its ``stats.json`` exists (it is written last)."""
    return (Path(out) / STATS_FILE).is_file()


def run_stage(
    stage: Stage,
    items: Iterable[Item],
    out: str | Path,
    options: RunOptions | None = None,
    source: str | None = None,
    total: int | None = None,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``stage`` over ``items`` into the folder ``out``; return its stats.

    A complete ``out`` is left alone (re-running skips finished work) unless ``overwrite``; a
    partial one (``.OUT.partial`` next to it) is resumed. Every item ends kept or rejected with a
    reason, once; a repeated id is rejected (:func:`unique_ids`). ``source`` names the input (recorded
    in ``stats.json``, so a run's lineage can be followed back).
    """
    options = options or RunOptions()
    out = Path(out)
    finished = finished_output(stage.name, stage.config, source, out, options)
    if finished is not None:
        return finished
    fingerprint = {
        "stage": stage.name,
        "config": config_to_dict(stage.config),
        "input": source,
        "chunk_size": options.chunk_size,  # progress files are numbered by chunk
    }
    staging = _staging_dir(out)
    if options.overwrite and staging.exists():
        shutil.rmtree(staging)
    _check_resumable(staging, fingerprint)
    progress_dir = staging / _PROGRESS
    started = time.perf_counter()
    pending = (
        (index, chunk)
        for index, chunk in chunked(unique_ids(items), options.chunk_size)
        if not (progress_dir / f"{index:08d}.json").exists()
    )
    fn = partial(process_chunk, stage, str(staging))
    mapper = _map_ray if options.engine == "ray" else _map_local
    results = mapper(fn, pending, options.workers)
    if options.progress:
        results = _with_progress(results, stage.name, total, options.chunk_size)
    processed = 0
    for index, result in results:
        _commit_chunk(progress_dir, index, result)
        processed += len(result.rows) + len(result.rejects)
    seconds = time.perf_counter() - started
    stats = _finalize(staging, out, fingerprint, options, seconds, processed, extra_stats or {})
    return stats


def run_dataset_stage(
    stage: Stage,
    source: str | Path,
    out: str | Path,
    options: RunOptions | None = None,
    extra_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`run_stage` over the samples of the dataset folder ``source``."""
    items = read_dataset(source)
    total = dataset_size(source)
    return run_stage(stage, items, out, options, str(Path(source).resolve()), total, extra_stats)


def _with_progress(results, name: str, total: int | None, chunk_size: int):
    from rich.console import Console
    from rich.progress import Progress

    chunks = None if total is None else -(-total // chunk_size)
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"data {name}", total=chunks)
        for pair in results:
            bar.advance(task)
            yield pair


def _commit_chunk(progress_dir: Path, index: int, result: ChunkResult) -> None:
    write_text_atomic(
        progress_dir / f"{index:08d}.json", json.dumps({"rows": result.rows, "rejects": result.rejects})
    )


def _finalize(
    staging: Path,
    out: Path,
    fingerprint: dict[str, Any],
    options: RunOptions,
    seconds: float,
    processed: int,
    extra_stats: dict[str, Any],
) -> dict[str, Any]:
    """Concatenate committed chunks in order, write stats, and move the folder into place."""
    progress_dir = staging / _PROGRESS
    reasons: Counter[str] = Counter()
    kept = rejected = 0
    with (
        (staging / METADATA_FILE).open("w", encoding="utf-8") as meta,
        (staging / REJECTS_FILE).open("w", encoding="utf-8") as rejects,
    ):
        for chunk_file in sorted(progress_dir.glob("[0-9]*.json")):
            chunk = json.loads(chunk_file.read_text(encoding="utf-8"))
            for row in chunk["rows"]:
                meta.write(json.dumps(row, ensure_ascii=False) + "\n")
            for row in chunk["rejects"]:
                rejects.write(json.dumps(row, ensure_ascii=False) + "\n")
                reasons[reason_kind(row["reason"])] += 1
            kept += len(chunk["rows"])
            rejected += len(chunk["rejects"])
    stats = {
        "stage": fingerprint["stage"],
        "input": fingerprint["input"],
        "config": fingerprint["config"],
        "samples_in": kept + rejected,
        "kept": kept,
        "rejected": rejected,
        "reject_reasons": dict(sorted(reasons.items())),
        **extra_stats,
        "run": {
            "engine": options.engine,
            "workers": options.workers,
            "chunk_size": options.chunk_size,
            "seconds_this_run": round(seconds, 3),
            "samples_this_run": processed,
            "samples_per_second": round(processed / seconds, 2) if seconds > 0 and processed else None,
        },
    }
    shutil.rmtree(progress_dir)
    for leftover in staging.glob(".*.tmp"):  # image writes a killed run left half-done
        leftover.unlink()
    (staging / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        retired = out.with_name(f".{out.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        out.rename(retired)
        staging.rename(out)
        shutil.rmtree(retired)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    return stats


def reason_kind(reason: str) -> str:
    """The kind of a reject reason: its text up to the first colon ("undecodable: ..." -> "undecodable")."""
    return reason.split(":", 1)[0].strip()
