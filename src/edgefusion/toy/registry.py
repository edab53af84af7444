"""Shipped toy models, addressable by name wherever a model folder is accepted (``toy:teacher``).

:mod:`edgefusion.toy.plugins` registers :func:`shipped_path` as the model source of the ``toy:``
prefix, so the resolver of the inference layer finds these folders without importing this world.
"""

from __future__ import annotations

from pathlib import Path

from edgefusion.errors import EdgefusionError

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {
    "teacher": "the toy SD teacher pipeline (SD-v1 block layout, zero-terminal-SNR DDIM, CFG)",
    "bk-tiny-adv": "BK-SDM-Tiny cut from the toy teacher and distilled by it (3.3M-param U-Net, fp16)",
    "edgefusion": "toy EdgeFusion: toy:bk-tiny-adv LCM-distilled from toy:teacher for 1-4 steps (fp16)",
    "edgefusion-tinyvae": "toy:edgefusion decoding with a distilled tiny decoder (AutoencoderTiny layout, "
    "32 channels, 215k params, fp16; the other parts are toy:edgefusion's)",
    "evaluator": "the toy attribute classifier and toy CLIP (metrics only, not a pipeline)",
}
PREFIX = "toy:"


def shipped_path(name: str) -> Path:
    """Folder of a shipped toy model; a clear error for unknown or missing names."""
    if name not in SHIPPED:
        raise EdgefusionError(f"unknown toy model {name!r}; shipped: {', '.join(sorted(SHIPPED))}")
    path = WEIGHTS_DIR / name
    if not path.exists():
        raise EdgefusionError(
            f"toy model {name!r} is not in this install ({path}); rebuild it with `edgefusion toy train`"
        )
    return path
