"""``edgefusion bench``: a thin wrapper over :func:`edgefusion.bench.latency.bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.bench.latency import BACKENDS
from edgefusion.bench.models import ARCHITECTURES

_LABELS = {"text_encoder": "text encoder", "unet_step": "U-Net / step", "vae_decoder": "VAE decoder"}


def bench_command(
    models: Annotated[
        list[str],
        typer.Argument(
            help=f"Built-in architectures ({', '.join(ARCHITECTURES)}; random weights), "
            "pipeline folders or toy:NAME."
        ),
    ],
    resolution: Annotated[int, typer.Option(help="Image size in pixels.")] = 512,
    steps: Annotated[list[int], typer.Option(help="Steps of a composed total; repeat for several.")] = [25],  # noqa: B006
    backend: Annotated[list[str], typer.Option(help=f"{', '.join(BACKENDS)}; repeat for several.")] = [  # noqa: B006
        "torch-fp32"
    ],
    warmup: Annotated[int, typer.Option(help="Untimed runs per component.")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed runs per component (the median is reported).")] = 3,
    cfg: Annotated[
        bool | None, typer.Option("--cfg/--no-cfg", help="Classifier-free guidance (default: unless LCM).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: torch's).")] = None,
    work_dir: Annotated[
        Path,
        typer.Option(help="Cache of the pipeline folders and ONNX exports the onnxruntime backend makes."),
    ] = Path("outputs/bench"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as a JSON list.")] = False,
) -> None:
    """Latency per component (median after warm-up) and peak memory, EdgeFusion Table 7's form."""
    from edgefusion.bench.latency import BenchConfig, bench

    records = bench(BenchConfig(models, resolution, steps, backend, warmup, repeats, cfg, threads, work_dir))
    if as_json:
        print(json.dumps(records, indent=2))
        return
    table = Table(title=f"latency in seconds (median of {repeats} after {warmup} warm-up), {resolution} px")
    for column in ("model", "backend", "CFG", "steps", *_LABELS.values(), "total", "speedup", "peak RSS MiB"):
        table.add_column(column, justify="left" if column in ("model", "backend") else "right", no_wrap=True)
    for key in dict.fromkeys((r["model"], r["backend"]) for r in records):
        rows = [r for r in records if (r["model"], r["backend"]) == key]
        parts = {r["component"]: r for r in rows if r["component"] != "total"}
        for total in (r for r in rows if r["component"] == "total"):
            table.add_row(
                *key,
                "yes" if total["cfg"] else "no",
                str(total["steps"]),
                *(f"{parts[c]['median_s']:.3f}" for c in _LABELS),
                f"{total['median_s']:.3f}",
                f"{total['speedup']:.2f}x",
                f"{total['peak_rss_mib']:,.0f}",
            )
    console = Console(width=max(Console().width, 130))
    console.print(table)
    console.print(
        f"totals composed as text encoder + steps x U-Net step + decoder; speedup vs "
        f"{records[-1]['speedup_vs']}; {records[0]['threads']} thread(s); peak RSS = process high-water mark"
    )


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the main ``edgefusion`` app."""
    app.command("bench")(bench_command)
