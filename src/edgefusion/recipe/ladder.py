"""The data ladder of a recipe's ``data`` stage, for its report: sizes, removals, example rejects.

The paper's Table 8 reads as a ladder (L-orig -> L-pp -> L-pps -> synt -> synt-cur): what each
curation step kept and what it removed. A data stage writes one numbered folder per step with a
``stats.json`` (samples in, kept, reject reasons) and a ``rejects.jsonl`` naming each removed
sample's reason and source file; this module turns those into one table and, per step and
reason, a few thumbnails of what was removed, so a reader can judge the removals by eye.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from edgefusion.data.dataset import REJECTS_FILE, iter_rows, read_stats
from edgefusion.data.runner import reason_kind

#: Example rejects shown per step and reason, and their side in pixels.
EXAMPLES_PER_REASON = 4
THUMBNAIL = 96


def ladder_steps(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The finished steps of a data stage's folder (``NN-name/stats.json``, in place only once the
    step is whole), in step order."""
    steps = [(step, read_stats(step)) for step in sorted(folder.iterdir())] if folder.is_dir() else []
    return [(step, stats) for step, stats in steps if "samples_in" in stats]


def ladder_section(folder: Path, image: Callable[[bytes], str]) -> str:
    """The ladder table and example rejects of the data stage in ``folder`` ('' if it has no steps);
    ``image`` turns PNG bytes into the page's ``<img>``."""
    steps = ladder_steps(folder)
    if not steps:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(step.name)}</td><td>{html.escape(str(stats.get('stage', '')))}</td>"
        f"<td>{stats.get('samples_in', 0):,}</td><td>{stats.get('kept', 0):,}</td>"
        f"<td>{stats.get('rejected', 0):,}</td><td>{html.escape(_reasons(stats))}</td></tr>"
        for step, stats in steps
    )
    parts = [
        "<h3>Data ladder</h3><table><tr><th>step</th><th>stage</th><th>in</th><th>kept</th>"
        f"<th>removed</th><th>why removed</th></tr>{rows}</table>"
    ]
    for step, _ in steps:
        examples = example_rejects(step)
        if examples:
            parts.append(f"<h4>Removed by {html.escape(step.name)}</h4>")
            for reason, shown in examples.items():
                figures = "".join(
                    f"<figure class='reject'>{image(png)}<figcaption>{html.escape(text)}"
                    "</figcaption></figure>"
                    for png, text in shown
                )
                parts.append(f"<p>{html.escape(reason)}</p><div>{figures}</div>")
    return "".join(parts)


def example_rejects(step: Path) -> dict[str, list[tuple[bytes, str]]]:
    """Up to :data:`EXAMPLES_PER_REASON` thumbnails per reason kind, with the reason in full, of the
    step's rejects whose source image is still readable."""
    found: dict[str, list[tuple[bytes, str]]] = {}
    for row in iter_rows(step, REJECTS_FILE):
        shown = found.setdefault(reason_kind(str(row.get("reason", ""))), [])
        if len(shown) < EXAMPLES_PER_REASON and row.get("source"):
            png = thumbnail(Path(row["source"]))
            if png is not None:
                shown.append((png, f"{row.get('id', '')}: {row.get('reason', '')}"))
    return {kind: shown for kind, shown in found.items() if shown}


def thumbnail(path: Path) -> bytes | None:
    """``path`` as a PNG at most :data:`THUMBNAIL` pixels a side, or None if it cannot be read."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = THUMBNAIL / max(img.size)
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(size, Image.NEAREST if scale >= 1 else Image.BILINEAR)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _reasons(stats: dict[str, Any]) -> str:
    reasons = stats.get("reject_reasons") or {}
    return ", ".join(f"{kind} {count:,}" for kind, count in reasons.items()) or "-"
