"""``edgefusion recipe report DIR``: one self-contained HTML page of a recipe's run folder.

First a summary of the stages and every eval stage's metrics side by side (the teacher's beside
the students'); then per stage: what ran, its state and how long it took (from the state file),
the curves of every loss term its training logged, the metrics an eval stage wrote, the contact
sheet a sheet stage made, the latency table a bench stage measured and a data stage's ladder.
Images are embedded as base64 PNGs and the page has no script or link to fetch, so it can be
mailed or opened offline. It reads whatever exists, so it works on a run in progress
(a stage still ``running`` shows the curves logged so far).
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
from pathlib import Path
from typing import Any

from edgefusion.atomic import write_text_atomic
from edgefusion.errors import EdgefusionError
from edgefusion.recipe.ladder import ladder_section
from edgefusion.recipe.latency import BENCH_FILE
from edgefusion.recipe.plots import plot_curves, read_curves
from edgefusion.recipe.sheet import SHEET_FILE
from edgefusion.recipe.spec import flatten_settings
from edgefusion.recipe.state import STATE_FILE, StageRecord, read_state
from edgefusion.train.loop import LOSSES_FILE

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"
_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: 90%; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
.done { color: #176617; } .running { color: #a15c00; }
img { max-width: 100%; }
td.num { text-align: right; }
figure.reject { display: inline-block; margin: .3em; width: 110px; font-size: 70%; vertical-align: top; }
"""


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the recipe run in ``folder`` (default: ``folder/report.html``)."""
    folder = Path(folder)
    state = read_state(folder)
    if not state.stages:
        raise EdgefusionError(
            f"{folder} holds no recipe run ({STATE_FILE} not found): "
            "give the folder `edgefusion recipe run` wrote"
        )
    names = [n for n in state.order if n in state.stages] + [n for n in state.stages if n not in state.order]
    found = {name: report_files(Path(state.stages[name].folder)) for name in names}
    sections = [stage_section(name, state.stages[name], found[name]) for name in names]
    title = f"Recipe report: {html.escape(state.recipe or str(folder))}"
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
        f"<p>Folder {html.escape(str(folder.resolve()))}, written {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"
        f"{summary_table(names, state.stages)}{metrics_side_by_side(found)}"
        f"{''.join(sections)}</body></html>\n"
    )
    return write_text_atomic(Path(out) if out is not None else folder / REPORT_FILE, page)


def summary_table(names: list[str], records: dict[str, StageRecord]) -> str:
    """One row per stage: its name (a link to its section), kind, status and time."""
    rows = "".join(
        f"<tr><td><a href='#{html.escape(n)}'>{html.escape(n)}</a></td><td>{html.escape(r.kind)}</td>"
        f"<td class='{r.status}'>{r.status}</td><td>{_duration(r.seconds)}</td></tr>"
        for n, r in ((n, records[n]) for n in names)
    )
    return f"<table><tr><th>stage</th><th>kind</th><th>status</th><th>time</th></tr>{rows}</table>"


#: The files a stage's section shows, wherever they lie in its folder.
REPORTED_FILES = (LOSSES_FILE, METRICS_FILE, SHEET_FILE, BENCH_FILE)


def report_files(folder: Path) -> dict[str, list[Path]]:
    """Every file of :data:`REPORTED_FILES` under ``folder``, by name, in path order: one walk of
    the folder (a data or eval stage's holds every image it wrote)."""
    found: dict[str, list[Path]] = {name: [] for name in REPORTED_FILES}
    for root, _, files in os.walk(folder):
        for name in found.keys() & set(files):
            found[name].append(Path(root) / name)
    return {name: sorted(paths) for name, paths in found.items()}


def stage_section(name: str, record: StageRecord, files: dict[str, list[Path]]) -> str:
    """The section of one stage: its record, loss curves, metrics, contact sheet, latency table and
    data ladder; ``files`` are its :func:`report_files`."""
    folder = Path(record.folder)
    parts = [
        f"<h2 id='{html.escape(name)}'>{html.escape(name)} ({html.escape(record.kind)})</h2>",
        _facts(record),
    ]
    planned = record.settings.get("train.steps")
    for log in files[LOSSES_FILE]:
        curves = read_curves(log)
        if curves:
            logged = len(next(iter(curves.values()))[0])
            title = f"{name}: {logged}{f' of {planned}' if planned else ''} steps logged"
            parts.append(f"<h3>Losses ({html.escape(str(log.relative_to(folder)))})</h3>")
            parts.append(_image(plot_curves(curves, title)))
    for metrics in files[METRICS_FILE]:
        parts.append(
            f"<h3>Metrics ({html.escape(str(metrics.relative_to(folder)))})</h3>{metrics_table(metrics)}"
        )
    for sheet in files[SHEET_FILE]:
        parts.append(f"<h3>Contact sheet</h3>{_image(sheet.read_bytes())}")
    for bench in files[BENCH_FILE]:
        parts.append(f"<h3>Latency per component</h3>{latency_table(bench)}")
    if record.kind == "data":
        parts.append(ladder_section(folder, _image))
    return "<section>" + "".join(parts) + "</section>"


def _facts(record: StageRecord) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started)) if record.started else "-"
    finished = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.finished)) if record.finished else "-"
    status = record.status if record.status == "done" else "running (or interrupted)"
    rows = [
        ("status", f"<span class='{record.status}'>{status}</span>"),
        ("time", f"{_duration(record.seconds)} over {record.runs} run(s)"),
        ("last started", started),
        ("finished", finished),
        ("output", html.escape(record.output)),
        ("inputs", html.escape(", ".join(record.inputs) or "none from other stages")),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def metrics_table(path: Path) -> str:
    """The numbers of a ``metrics.json`` (its settings aside) as a two-column table."""
    metrics = read_metrics(path)
    if metrics is None:
        return "<p>(being written)</p>"
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in metrics.items())
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def read_metrics(path: Path) -> dict[str, float] | None:
    """The numbers of a ``metrics.json`` (its settings aside), flattened; None while it is written."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    flat: dict[str, Any] = flatten_settings({k: v for k, v in data.items() if k != "settings"})
    return {k: v for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def metrics_side_by_side(found: dict[str, dict[str, list[Path]]]) -> str:
    """Every stage's ``metrics.json`` in one table, a column per stage ('' with fewer than two):
    the teacher's numbers beside the students' they are judged against; ``found`` holds each
    stage's :func:`report_files`, in stage order."""
    columns: dict[str, dict[str, float]] = {}
    for name, files in found.items():
        metrics = read_metrics(files[METRICS_FILE][0]) if files[METRICS_FILE] else None
        if metrics:
            columns[name] = metrics
    if len(columns) < 2:
        return ""
    keys = list(dict.fromkeys(key for metrics in columns.values() for key in metrics))
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    rows = "".join(
        f"<tr><td>{html.escape(key)}</td>"
        + "".join(
            f"<td class='num'>{metrics[key]:.4g}</td>" if key in metrics else "<td class='num'>-</td>"
            for metrics in columns.values()
        )
        + "</tr>"
        for key in keys
    )
    return f"<h2 id='metrics'>Metrics side by side</h2><table><tr><th>metric</th>{head}</tr>{rows}</table>"


def latency_table(path: Path) -> str:
    """A bench stage's records as one row per model: seconds per component, the composed total
    at the model's steps, the whole ``generate`` call and peak memory."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["records"]
    except (ValueError, KeyError):
        return "<p>(being written)</p>"
    components = {"text_encoder": "text encoder", "unet_step": "U-Net call", "vae_decoder": "VAE decoder"}
    head = "".join(
        f"<th>{label}</th>"
        for label in ("model", "backend", "steps", *components.values(), "total (composed)", "speedup",
                      "generate call", "first call", "peak RSS MiB")
    )  # fmt: skip
    rows = []
    for total in (r for r in records if r["component"] == "total"):
        parts = {
            r["component"]: r["median_s"]
            for r in records
            if (r["model"], r["backend"]) == (total["model"], total["backend"]) and r["component"] != "total"
        }
        cells = [
            html.escape(str(total["model"])),
            html.escape(str(total["backend"])),
            str(total["steps"]),
            *(f"{parts[c]:.4f}" if c in parts else "-" for c in components),
            f"{total['median_s']:.4f}",
            f"{total['speedup']:.2f}x" if "speedup" in total else "-",
            f"{total['end_to_end_s']:.4f}" if "end_to_end_s" in total else "-",
            f"{total['first_call_s']:.2f}" if "first_call_s" in total else "-",
            f"{total['peak_rss_mib']:,.0f}",
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    first = records[0] if records else {}
    note = (
        f"<p>Median seconds over {first.get('repeats', '?')} runs after {first.get('warmup', '?')} warm-up, "
        f"{first.get('resolution', '?')} px, {first.get('threads', '?')} thread(s); total = text encoder + "
        "steps x U-Net call + decoder; generate call = one whole image (tokenize to PNG) in a fresh "
        "process, first call = load and first image; speedup against the first model.</p>"
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{note}"


def _image(png: bytes) -> str:
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {rest:02d}s" if hours else f"{minutes}m {rest:02d}s"
