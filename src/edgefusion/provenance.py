"""How a model folder was made, and how it is meant to be sampled: ``unet/edgefusion.json``.

Every stage that writes a U-Net (compress, train, distill, lcm) records its provenance in this
file beside the U-Net's ``config.json``; diffusers ignores it, so the folder stays a plain
diffusers folder. One entry there is read back by every command that samples: ``guidance_scale``,
the classifier-free guidance scale the model is meant to be sampled with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Written next to a U-Net's config.json: how the folder was made.
PROVENANCE_FILE = "edgefusion.json"
#: SD's classifier-free guidance scale: what a model that records none is sampled with.
DEFAULT_GUIDANCE = 7.5


def read_provenance(folder: Path) -> dict[str, Any]:
    """The provenance of a pipeline folder (or of a bare U-Net folder); empty when it has none."""
    for candidate in (folder / "unet" / PROVENANCE_FILE, folder / PROVENANCE_FILE):
        if candidate.is_file():
            try:
                record = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return {}
            return record if isinstance(record, dict) else {}
    return {}


def recorded_guidance(folder: Path) -> float | None:
    """The guidance scale ``folder`` records for sampling, or None.

    LCM folders written before ``guidance_scale`` was recorded state their distillation range
    ``w_range`` (LCM's convention: CFG scale ``1 + w``); its middle is the scale they sample with.
    """
    record = read_provenance(folder)
    scale = record.get("guidance_scale")
    if isinstance(scale, int | float) and not isinstance(scale, bool):
        return float(scale)
    w_range = record.get("w_range")
    if isinstance(w_range, list) and len(w_range) == 2:
        return 1.0 + (float(w_range[0]) + float(w_range[1])) / 2
    return None
