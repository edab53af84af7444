"""``edgefusion bench``: a thin wrapper over :func:`edgefusion.bench.latency.bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgefusion.bench.latency import BACKENDS, TINY_DECODER
from edgefusion.bench.models import ARCHITECTURES
from edgefusion.cli_options import config_file, old_spellings

_LABELS = {
    "text_encoder": "text encoder",
    "unet_step": "U-Net / step",
    "vae_decoder": "VAE decoder",
    TINY_DECODER: "tiny decoder",
}
_END_TO_END = {
    "end_to_end_s": "end-to-end",
    "first_call_s": "first call",
    "first_call_warm_s": "first call, warm",
    "end_to_end_peak_rss_mib": "e2e peak RSS MiB",
}


@config_file("bench", shares="models")
@old_spellings(size="--resolution")
def bench_command(
    models: Annotated[
        list[str],
        typer.Argument(
            help=f"Built-in architectures ({', '.join(ARCHITECTURES)}; random weights), "
            "pipeline folders or toy:NAME."
        ),
    ],
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 512,
    steps: Annotated[list[int], typer.Option(help="Steps of a composed total; repeat for several.")] = [25],  # noqa: B006
    backend: Annotated[list[str], typer.Option(help=f"{', '.join(BACKENDS)}; repeat for several.")] = [  # noqa: B006
        "torch-fp32"
    ],
    warmup: Annotated[int, typer.Option(help="Untimed runs per component.")] = 1,
    repeats: Annotated[
        int, typer.Option(help="Timed runs per component and end-to-end (the median is reported).")
    ] = 3,
    cfg: Annotated[
        bool | None, typer.Option("--cfg/--no-cfg", help="Classifier-free guidance (default: unless LCM).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: torch's).")] = None,
    vae: Annotated[
        str | None,
        typer.Option(
            help="Also time this decoder and decode with it: taesd (TAESD's layout, random weights) "
            "or a decoder folder."
        ),
    ] = None,
    end_to_end: Annotated[
        bool,
        typer.Option(
            "--end-to-end/--no-end-to-end",
            help="Also time whole generate calls (first call cold and warm, then --repeats) per backend.",
        ),
    ] = True,
    work_dir: Annotated[
        Path,
        typer.Option(help="Cache of saved pipelines, ONNX exports and scratch space of the graph backends."),
    ] = Path("outputs/bench"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as a JSON list.")] = False,
) -> None:
    """Latency per component (median after warm-up) and peak memory, EdgeFusion Table 7's form, and
    the end-to-end time of whole generate calls."""
    from edgefusion.bench.latency import BenchConfig, bench

    config = BenchConfig(
        models, size, steps, backend, warmup, repeats, cfg, threads, work_dir, vae, end_to_end
    )
    records = bench(config)
    if as_json:
        print(json.dumps(records, indent=2))
        return
    print_table(records, f"latency in seconds (median of {repeats} after {warmup} warm-up), {size} px")


def print_table(records: list[dict], title: str) -> None:
    """One row per model, backend and step count: components, composed total, end-to-end."""
    labels = {c: label for c, label in _LABELS.items() if any(r["component"] == c for r in records)}
    extra = {k: label for k, label in _END_TO_END.items() if any(k in r for r in records)}
    table = Table(title=title)
    columns = ("model", "backend", "CFG", "steps", *labels.values(), "total", "speedup", "peak RSS MiB")
    for column in (*columns, *extra.values()):
        table.add_column(column, justify="left" if column in ("model", "backend") else "right", no_wrap=True)
    for key in dict.fromkeys((r["model"], r["backend"]) for r in records):
        rows = [r for r in records if (r["model"], r["backend"]) == key]
        parts = {r["component"]: r for r in rows if r["component"] != "total"}
        for total in (r for r in rows if r["component"] == "total"):
            table.add_row(
                *key,
                "yes" if total["cfg"] else "no",
                str(total["steps"]),
                *(f"{parts[c]['median_s']:.3f}" for c in labels),
                f"{total['median_s']:.3f}",
                f"{total['speedup']:.2f}x",
                f"{total['peak_rss_mib']:,.0f}",
                *(f"{total[k]:,.0f}" if k.endswith("mib") else f"{total[k]:.3f}" for k in extra),
            )
    console = Console(width=max(Console().width, 130 + 18 * len(extra)))
    console.print(table)
    first = records[-1]
    console.print(
        f"totals composed as {first.get('composed', 'text encoder + steps x U-Net step + decoder')}; speedup "
        f"vs {first['speedup_vs']}; {records[0]['threads']} thread(s); peak RSS = process high-water mark"
        + (
            "; end-to-end = whole generate calls in a fresh process (first call: load, export or compile "
            "and the first image, with empty and with filled caches)"
            if extra
            else ""
        )
    )


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the main ``edgefusion`` app."""
    app.command("bench")(bench_command)
