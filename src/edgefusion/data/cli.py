"""``edgefusion data ...``: one command per curation stage, each a thin wrapper over its function.

Every stage command takes ``--data`` and ``--out`` folders, ``--config`` (a YAML/JSON file of the
stage's config; options given on the command line win) and the run options ``--workers``,
``--engine`` (local or ray), ``--chunk-size`` and ``--overwrite``.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.cli_options import old_spellings
from edgefusion.config import load_config
from edgefusion.data.config import merge_options
from edgefusion.data.runner import RunOptions

data_app = typer.Typer(
    help="Data curation: ingest, dedup, filter, crop, caption, synthesize, curate, shard, run, score.",
    no_args_is_help=True,
)
console = Console()

DataDir = Annotated[Path, typer.Option("--data", help="Input dataset folder (or raw source for ingest).")]
OutDir = Annotated[Path, typer.Option("--out", help="Output dataset folder.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML/JSON file of the stage's settings.")]
Workers = Annotated[int, typer.Option("--workers", help="Worker processes (or Ray CPUs).")]
Engine = Annotated[str, typer.Option("--engine", help="local (process pool) or ray (Ray Data).")]
ChunkSize = Annotated[int, typer.Option("--chunk-size", help="Samples per resumable chunk.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Redo a finished output instead of skipping it.")
]


def _config(cls: type, path: Path | None, what: str, **options: Any):
    return merge_options(load_config(cls, path, what=f"{what} setting"), **options)


def _report(out: Path, stats: dict[str, Any]) -> None:
    reasons = ", ".join(f"{k}: {v}" for k, v in stats.get("reject_reasons", {}).items()) or "none"
    console.print(
        f"[green]{stats['stage']}[/] {stats.get('samples_in')} in, {stats.get('kept')} kept, "
        f"{stats.get('rejected')} removed ({reasons}) -> {out}"
    )


#: The run options every stage command takes after its own; they reach it as ``options``.
RUN_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
    for name, annotation, default in (
        ("workers", Workers, 1),
        ("engine", Engine, "local"),
        ("chunk_size", ChunkSize, 256),
        ("overwrite", Overwrite, False),
    )
]


def stage_command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn`` as the command ``data NAME`` with the run options after its own options:
    ``fn`` declares a keyword ``options`` and receives them as one :class:`RunOptions`."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(fn, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != "options"]

        @functools.wraps(fn)
        def command(
            *args: Any, workers: int, engine: str, chunk_size: int, overwrite: bool, **kwargs: Any
        ) -> None:
            options = RunOptions(workers=workers, engine=engine, chunk_size=chunk_size, overwrite=overwrite)
            fn(*args, options=options, **kwargs)

        command.__signature__ = own.replace(parameters=[*params, *RUN_OPTIONS])  # what typer reads
        return data_app.command(name)(command)

    return register


@stage_command("ingest")
@old_spellings(data="--in")
def ingest_command(
    data: DataDir,
    out: OutDir,
    config: ConfigFile = None,
    format: Annotated[str | None, typer.Option(help="auto, imagefolder, csv, parquet, webdataset.")] = None,
    path_column: Annotated[str | None, typer.Option(help="Table column with image paths.")] = None,
    caption_column: Annotated[str | None, typer.Option(help="Table column with captions.")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Refuse images declaring more pixels.")] = None,
    *,
    options: RunOptions,
) -> None:
    """Read an image folder (metadata.jsonl or .txt captions), CSV/parquet table or WebDataset tars."""
    from edgefusion.data.ingest import IngestConfig, ingest

    cfg = _config(
        IngestConfig,
        config,
        "ingest",
        format=format,
        path_column=path_column,
        caption_column=caption_column,
        max_pixels=max_pixels,
    )
    _report(out, ingest(data, out, cfg, options))


@stage_command("dedup")
@old_spellings(data="--in")
def dedup_command(
    data: DataDir,
    out: OutDir,
    config: ConfigFile = None,
    hash_threshold: Annotated[
        int | None, typer.Option(help="pHash candidates within this many bits.")
    ] = None,
    thumbnail_threshold: Annotated[
        float | None, typer.Option(help="Confirm a candidate when thumbnails differ at most this much.")
    ] = None,
    near: Annotated[
        bool | None, typer.Option("--near/--exact-only", help="Also remove near duplicates.")
    ] = None,
    *,
    options: RunOptions,
) -> None:
    """Remove exact (SHA-256) and near (pHash + thumbnail) duplicates, keeping the largest copy."""
    from edgefusion.data.dedup import DedupConfig, dedup

    cfg = _config(
        DedupConfig,
        config,
        "dedup",
        hash_threshold=hash_threshold,
        thumbnail_threshold=thumbnail_threshold,
        near=near,
    )
    _report(out, dedup(data, out, cfg, options))


@stage_command("filter")
@old_spellings(data="--in")
def filter_command(
    data: DataDir,
    out: OutDir,
    config: ConfigFile = None,
    min_side: Annotated[
        int | None, typer.Option(help="Minimum short side in px (default: the paper's 300; 0: off).")
    ] = None,
    max_aspect_ratio: Annotated[float | None, typer.Option(help="Largest long/short side ratio.")] = None,
    min_jpeg_quality: Annotated[int | None, typer.Option(help="Drop JPEGs saved below this quality.")] = None,
    detect_upscaling: Annotated[
        bool | None,
        typer.Option("--detect-upscaling/--no-detect-upscaling", help="Drop images upscaled 2x+."),
    ] = None,
    upscale_residual: Annotated[float | None, typer.Option(help="Upscale detector threshold.")] = None,
    *,
    options: RunOptions,
) -> None:
    """Drop images that are too small, too elongated, heavily compressed or upscaled."""
    from edgefusion.data.filter import FilterConfig, filter_images

    cfg = _config(
        FilterConfig,
        config,
        "filter",
        min_side=min_side,
        max_aspect_ratio=max_aspect_ratio,
        min_jpeg_quality=min_jpeg_quality,
        detect_upscaling=detect_upscaling,
        upscale_residual=upscale_residual,
    )
    _report(out, filter_images(data, out, cfg, options))


@stage_command("crop")
@old_spellings(data="--in")
def crop_command(
    data: DataDir,
    out: OutDir,
    config: ConfigFile = None,
    size: Annotated[int | None, typer.Option(help="Output side in px.")] = None,
    scorer: Annotated[
        str | None, typer.Option(help="border_contrast, edges or module:function importance map.")
    ] = None,
    *,
    options: RunOptions,
) -> None:
    """Crop to the best of the centre and two end squares, then resize to --size."""
    from edgefusion.data.crop import CropConfig, crop

    cfg = _config(CropConfig, config, "crop", size=size, scorer=scorer)
    _report(out, crop(data, out, cfg, options))


@stage_command("caption")
@old_spellings(data="--in")
def caption_command(
    data: DataDir,
    out: OutDir,
    config: ConfigFile = None,
    captioner: Annotated[str | None, typer.Option(help="toy, transformers or module:factory.")] = None,
    model: Annotated[str | None, typer.Option(help="Model folder (toy: toy:evaluator).")] = None,
    *,
    options: RunOptions,
) -> None:
    """Recaption every image (after cropping); the old caption is kept as original_text."""
    from edgefusion.data.caption import CaptionConfig, caption

    cfg = _config(CaptionConfig, config, "caption", captioner=captioner, model=model)
    _report(out, caption(data, out, cfg, options))


@stage_command("synthesize")
@old_spellings(num_prompts="--n", prompts="--prompt-file")
def synthesize_command(
    out: OutDir,
    config: ConfigFile = None,
    num_prompts: Annotated[int | None, typer.Option(help="Number of image-text pairs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sample i uses seed + i.")] = None,
    prompts: Annotated[
        str | None,
        typer.Option(help="A prompt source (toy; templates, from --config) or a file, one prompt a line."),
    ] = None,
    generator: Annotated[
        str | None, typer.Option(help="toy:render, toy:teacher or a diffusers pipeline folder.")
    ] = None,
    llm_model: Annotated[
        str | None, typer.Option(help="Local transformers LM that rewrites prompts.")
    ] = None,
    llm_endpoint: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL that rewrites.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (pipelines).")] = None,
    size: Annotated[int | None, typer.Option(help="Render size (toy:render).")] = None,
    *,
    options: RunOptions,
) -> None:
    """Generate image-text pairs from balanced prompts (the paper's synt)."""
    from edgefusion.data.registry import PROMPT_SOURCES
    from edgefusion.data.synthesize import BUILT_IN_PROMPTS, SynthConfig, synthesize

    prompt_file = None
    if prompts is not None and prompts not in (*PROMPT_SOURCES.names(), *BUILT_IN_PROMPTS):
        prompts, prompt_file = "file", prompts
    cfg = _config(
        SynthConfig,
        config,
        "synthesize",
        n=num_prompts,
        seed=seed,
        prompts=prompts,
        prompt_file=prompt_file,
        generator=generator,
        llm_model=llm_model,
        llm_endpoint=llm_endpoint,
        steps=steps,
        size=size,
    )
    _report(out, synthesize(out, cfg, options))


@stage_command("curate")
@old_spellings(data="--in")
def curate_command(
    data: DataDir,
    out: OutDir,
    config: ConfigFile = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the curated dataset from the decisions.")
    ] = False,
    db: Annotated[str | None, typer.Option(help="Review queue file (default OUT.review.sqlite).")] = None,
    min_clip_score: Annotated[float | None, typer.Option(help="Pre-filter: reject below this.")] = None,
    check_attributes: Annotated[
        bool | None, typer.Option("--check-attributes", help="Toy pre-filter: caption must match classifier.")
    ] = None,
    pending: Annotated[str | None, typer.Option(help="On --apply, undecided samples: keep or drop.")] = None,
    *,
    options: RunOptions,
) -> None:
    """Queue samples for review (pre-filters decide the obvious ones); --apply writes the result."""
    from edgefusion.data.curate import CurateConfig, ReviewQueue, apply_decisions, build_queue
    from edgefusion.data.review_db import describe

    cfg = _config(
        CurateConfig,
        config,
        "curate",
        db=db,
        min_clip_score=min_clip_score,
        check_attributes=check_attributes,
        pending=pending,
    )
    if apply:
        _report(out, apply_decisions(data, out, cfg, options))
        return
    path = build_queue(data, out, cfg, options)
    queue = ReviewQueue(path, data)
    counts = queue.counts()
    queue.close()
    console.print(
        f"[green]queue[/] {describe(path)}: {counts}; review with `edgefusion data review --db {path}` "
        f"(terminal) or `edgefusion review serve --db {path}` (browser)"
    )


@data_app.command("review")
@old_spellings(num_prompts="--limit")
def review_command(
    db: Annotated[
        str, typer.Option(help="Review queue written by `data curate` (a file or a postgresql:// URL).")
    ],
    num_prompts: Annotated[int | None, typer.Option(help="Review at most this many samples.")] = None,
    task: Annotated[str | None, typer.Option(help="Curation task, when the file holds several.")] = None,
    reviewer: Annotated[
        str | None, typer.Option(help="Name your decisions are recorded under (default: your login).")
    ] = None,
) -> None:
    """Walk the pending samples: a accept, r reject (with a reason), e edit the caption, s skip, q quit."""
    import getpass

    from edgefusion.data.curate import ReviewQueue
    from edgefusion.data.review_db import is_postgres
    from edgefusion.errors import EdgefusionError

    if not is_postgres(db) and not Path(db).is_file():
        raise EdgefusionError(f"no review queue at {db}: run `edgefusion data curate` first")
    by = reviewer or getpass.getuser()
    queue = ReviewQueue(db, task=task)
    try:
        for row in queue.pending(num_prompts):
            score = "-" if row["clip_score"] is None else f"{row['clip_score']:.3f}"
            console.print(
                f"\n[bold]{row['id']}[/] {row['file']}\n  caption: {row['text']}\n  clip score: {score}"
            )
            key = typer.prompt("[a]ccept [r]eject [e]dit [s]kip [q]uit", default="s").strip().lower()[:1]
            if key == "q":
                break
            if key == "a":
                queue.decide(row["id"], "accept", by=by)
            elif key == "r":
                queue.decide(row["id"], "reject", typer.prompt("reason", default="rejected in review"), by=by)
            elif key == "e":
                text = typer.prompt("new caption", default=row["text"])
                queue.decide(
                    row["id"], "edit", typer.prompt("reason", default="caption corrected"), text, by=by
                )
        console.print(f"queue: {queue.counts()}")
    finally:
        queue.close()


@data_app.command("shard")
@old_spellings(data="--in")
def shard_command(
    data: DataDir,
    out: OutDir,
    config: ConfigFile = None,
    shard_size: Annotated[int | None, typer.Option(help="Samples per tar shard.")] = None,
    title: Annotated[str | None, typer.Option(help="Dataset title for the card.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Write WebDataset tar shards, manifest.jsonl and a dataset card (README.md)."""
    from edgefusion.data.shard import ShardConfig, shard

    cfg = _config(ShardConfig, config, "shard", shard_size=shard_size, title=title)
    stats = shard(data, out, cfg, overwrite)
    console.print(f"[green]shard[/] {stats['kept']} samples in {stats['shards']} shards -> {out}")


@data_app.command("run")
def run_command(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML: input, out, stages (see docs/DATA.md).")],
    overwrite: Overwrite = False,
) -> None:
    """Run the stages of a pipeline file in order; finished stages are skipped, killed ones resume."""
    from edgefusion.data.dataset import read_stats
    from edgefusion.data.pipeline import load_pipeline_file, run_pipeline

    for out in run_pipeline(load_pipeline_file(pipeline), overwrite=overwrite):
        _report(out, read_stats(out))


@data_app.command("score")
def score_command(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (its NN-stage subfolders) to score.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a run on the toy web set against its exact flaw labels."""
    from edgefusion.toy.scoring import score_run

    result = score_run(run_dir)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("stage", "in", "kept", "metrics", title=f"curation run {run_dir}")
    for name, metrics in result["stages"].items():
        shown = ", ".join(f"{k} {v}" for k, v in metrics.items() if k not in ("in", "kept", "reasons"))
        table.add_row(name, str(metrics["in"]), str(metrics["kept"]), shown or "-")
    console.print(table)
    console.print("ladder: " + ", ".join(f"{k} {v}" for k, v in result["ladder"].items()))
