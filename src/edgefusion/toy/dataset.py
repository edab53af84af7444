"""Write toy datasets in the project's dataset format: an HF ``imagefolder`` folder.

The folder holds the image files, ``metadata.jsonl`` (one JSON object per image: ``file_name``,
``text`` and our own fields) and ``stats.json``. ``datasets.load_dataset("imagefolder",
data_dir=...)`` reads it as is, and so do the curation stages of ``edgefusion data``. Our fields:
``record`` (the exact attribute record, ``Scene.to_dict()``), ``seed`` (the render seed),
``width``, ``height`` and, in the web variant, ``flaws`` with each flaw's details.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from edgefusion.atomic import atomic_output_dir
from edgefusion.cli_options import old_spellings
from edgefusion.errors import EdgefusionError
from edgefusion.toy.web import FLAWS, ToySample, WebFlawConfig, clean_sample, web_samples

KINDS = ("clean", "web")
MIN_SIZE, MAX_SIZE = 32, 1024
METADATA_FILE = "metadata.jsonl"
STATS_FILE = "stats.json"


def _check_request(kind: str, n: int, size: int, web_config: WebFlawConfig | None) -> None:
    """Refuse bad arguments before any work, each with the fix."""
    if kind not in KINDS:
        raise EdgefusionError(f"unknown dataset kind {kind!r}: use one of {', '.join(KINDS)}")
    if n < 1:
        raise EdgefusionError(f"n must be at least 1, got {n}: ask for one sample or more")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise EdgefusionError(f"size {size} is out of range: use {MIN_SIZE} to {MAX_SIZE} pixels")
    if kind == "clean" and web_config is not None:
        raise EdgefusionError("flaw rates apply only to the web variant: use kind 'web' or drop them")


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing file or non-empty folder unless asked to."""
    if overwrite or not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    raise EdgefusionError(f"{out} already exists and is not empty: choose another output or pass --overwrite")


def toy_samples(
    kind: str, n: int, seed: int, size: int, web_config: WebFlawConfig | None = None
) -> Iterator[ToySample]:
    """The first ``n`` samples of the ``kind`` toy dataset of ``seed``, in order."""
    if kind == "web":
        return web_samples(n, seed, size, web_config)
    return (clean_sample(seed, index, size) for index in range(n))


def metadata_row(sample: ToySample, kind: str) -> dict[str, Any]:
    """The ``metadata.jsonl`` object of a sample; flaw labels and details only in the web variant."""
    row: dict[str, Any] = {
        "file_name": sample.file_name,
        "text": sample.text,
        "record": sample.scene.to_dict(),
        "seed": sample.seed,
        "width": sample.width,
        "height": sample.height,
    }
    if kind == "web":
        row["flaws"] = list(sample.flaws)
        row.update(sample.details)
    return row


@dataclass
class _Tally:
    """What was written, for ``stats.json``: files per format, samples per flaw, flawless samples."""

    formats: Counter[str] = field(default_factory=Counter)
    flaws: Counter[str] = field(default_factory=Counter)
    flawless: int = 0

    def add(self, sample: ToySample) -> None:
        self.formats[sample.ext] += 1
        self.flaws.update(sample.flaws)
        self.flawless += not sample.flaws


def _write_samples(folder: Path, samples: Iterable[ToySample], kind: str) -> _Tally:
    """Write each image file and its metadata line, in sample order."""
    tally = _Tally()
    with (folder / METADATA_FILE).open("w", encoding="utf-8") as metadata:
        for sample in samples:
            (folder / sample.file_name).write_bytes(sample.data)
            metadata.write(json.dumps(metadata_row(sample, kind)) + "\n")
            tally.add(sample)
    return tally


def _stats(
    kind: str, n: int, seed: int, size: int, web_config: WebFlawConfig | None, tally: _Tally
) -> dict[str, Any]:
    """Everything needed to regenerate the folder, and its counts (per flaw in the web variant)."""
    stats: dict[str, Any] = {
        "kind": kind,
        "n": n,
        "seed": seed,
        "size": size,
        "formats": dict(sorted(tally.formats.items())),
    }
    if kind == "web":
        stats["flawless"] = tally.flawless
        stats["flaw_counts"] = {flaw: tally.flaws[flaw] for flaw in FLAWS}
        stats["web_config"] = asdict(web_config)
    return stats


def write_toy_dataset(
    out: str | Path,
    kind: str = "clean",
    n: int = 1000,
    seed: int = 0,
    size: int = 64,
    overwrite: bool = False,
    web_config: WebFlawConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write ``n`` toy samples to the folder ``out`` and return it.

    ``kind="clean"``: square PNG renders with true, varied captions. ``kind="web"``: the same
    stream with web-scraped flaws at ``web_config``'s rates, each labelled. The folder appears
    whole or not at all (it is built next to ``out`` and renamed), and the same arguments always
    give byte-identical files.
    """
    out = Path(out)
    _check_request(kind, n, size, web_config)
    _check_output(out, overwrite)
    if kind == "web":
        web_config = web_config or WebFlawConfig()
    samples = toy_samples(kind, n, seed, size, web_config)
    if progress:
        console = Console(stderr=True)
        samples = track(samples, f"writing {kind} toy data", total=n, console=console, transient=True)
    with atomic_output_dir(out, overwrite=True) as staging:
        tally = _write_samples(staging, samples, kind)
        stats = _stats(kind, n, seed, size, web_config, tally)
        (staging / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return out


def _web_config_from_options(
    config_file: Path | None, rates: dict[str, float | None]
) -> WebFlawConfig | None:
    """The config file's settings (or the defaults) with the rates given on the command line on top."""
    given = {flaw: rate for flaw, rate in rates.items() if rate is not None}
    if config_file is None and not given:
        return None
    base = WebFlawConfig.from_file(config_file) if config_file is not None else WebFlawConfig()
    return WebFlawConfig.from_dict({**asdict(base), **given})


def _print_summary(out: Path, stats: dict[str, Any]) -> None:
    console = Console()
    formats = ", ".join(f"{count} {fmt}" for fmt, count in stats["formats"].items())
    console.print(f"[bold green]wrote[/] {stats['n']} {stats['kind']} samples ({formats}) to {out}")
    if stats["kind"] != "web":
        return
    table = Table("flaw", "samples", "rate", "configured", title=f"{stats['flawless']} samples without flaws")
    for flaw, count in stats["flaw_counts"].items():
        table.add_row(flaw, str(count), f"{count / stats['n']:.3f}", f"{stats['web_config'][flaw]:.3f}")
    console.print(table)


def _rate_option(flaw: str) -> Any:
    default = getattr(WebFlawConfig, flaw)
    return typer.Option(
        f"--{flaw.replace('_', '-')}-rate",
        help=f"Web only: fraction of samples with the {flaw} flaw (default {default}).",
    )


@old_spellings(num_prompts="--n")
def data_command(
    num_prompts: Annotated[
        int, typer.Option("--num-prompts", help="Number of samples (image files) to write.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder; must not exist or be empty.")],
    kind: Annotated[
        str, typer.Option("--kind", help="clean: true captions, square renders. web: labelled flaws.")
    ] = "clean",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the dataset; the same seed gives identical files.")
    ] = 0,
    size: Annotated[
        int, typer.Option("--size", help=f"Image side in pixels ({MIN_SIZE} to {MAX_SIZE}).")
    ] = 64,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    web_config: Annotated[
        Path | None,
        typer.Option("--web-config", help="Web only: YAML/JSON file of flaw settings; rate options win."),
    ] = None,
    exact_duplicate: Annotated[float | None, _rate_option("exact_duplicate")] = None,
    near_duplicate: Annotated[float | None, _rate_option("near_duplicate")] = None,
    low_resolution: Annotated[float | None, _rate_option("low_resolution")] = None,
    off_center: Annotated[float | None, _rate_option("off_center")] = None,
    irrelevant_caption: Annotated[float | None, _rate_option("irrelevant_caption")] = None,
    wrong_caption: Annotated[float | None, _rate_option("wrong_caption")] = None,
    jpeg_artifacts: Annotated[float | None, _rate_option("jpeg_artifacts")] = None,
) -> None:
    """Write a toy shapes dataset as an HF imagefolder: images, metadata.jsonl, stats.json.

    Each metadata line holds file_name, text (the caption), record (the exact
    attributes), seed (the render seed), width and height.

    --kind web adds the flaws of web-scraped data, each labelled in a 'flaws' list
    with its details, so curation can be scored against them: exact and near
    duplicates (duplicate_of), low resolution (original_size), off-centre
    non-square images (subject_end, crop_box), irrelevant and partly wrong
    captions (true_caption, wrong_attribute), JPEG artifacts (jpeg_quality).

    Example: edgefusion toy data --kind web --num-prompts 2000 --seed 0 --out data/toy-web
    """
    rates = {
        "exact_duplicate": exact_duplicate,
        "near_duplicate": near_duplicate,
        "low_resolution": low_resolution,
        "off_center": off_center,
        "irrelevant_caption": irrelevant_caption,
        "wrong_caption": wrong_caption,
        "jpeg_artifacts": jpeg_artifacts,
    }
    config = _web_config_from_options(web_config, rates)
    written = write_toy_dataset(out, kind, num_prompts, seed, size, overwrite, config)
    _print_summary(written, json.loads((written / STATS_FILE).read_text(encoding="utf-8")))
