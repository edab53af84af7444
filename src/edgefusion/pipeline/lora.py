"""A LoRA folder as a model: its recorded base with the adapters fused in.

``edgefusion dreambooth --lora`` writes a folder with diffusers' ``pytorch_lora_weights.safetensors``
(which ``pipe.load_lora_weights(folder)`` applies to any copy of the base) and ``edgefusion.json``,
whose ``base`` names the model it was trained on and whose ``guidance_scale`` the scale it samples
with. Every command that samples through :func:`~edgefusion.pipeline.load.load_pipeline` takes
such a folder as its model (``generate --model runs/lora``, ``eval``, ``toy subject eval``): the
base loads as it would by itself (an LCM stays an LCM, with its scheduler), then diffusers loads the
adapters and fuses them into the weights, so sampling costs what the base's does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import first_line
from edgefusion.provenance import read_provenance

#: diffusers' default LoRA file name, which ``load_lora_weights(folder)`` looks for.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def is_lora_folder(path: Path) -> bool:
    """A folder of LoRA weights (not a pipeline folder that happens to hold some)."""
    return (path / LORA_WEIGHTS).is_file() and not (path / "model_index.json").exists()


def lora_base(path: Path) -> str:
    """The model spec the LoRA folder ``path`` records as its base."""
    base = read_provenance(path).get("base")
    if not isinstance(base, str) or not base:
        raise EdgefusionError(
            f"{path} holds LoRA weights but names no base model (no 'base' in its edgefusion.json): "
            "load them onto their base with diffusers' pipe.load_lora_weights"
        )
    return base


def load_lora_pipeline(path: Path, load_base: Callable[[str], Any]) -> Any:
    """The base of the LoRA folder ``path``, loaded by ``load_base(spec)``, with the adapters
    loaded and fused into its weights."""
    pipe = load_base(lora_base(path))
    if not hasattr(pipe, "load_lora_weights"):
        raise EdgefusionError(
            f"the base of {path} loads as {type(pipe).__name__}, which takes no LoRA weights: "
            "use a torch backend"
        )
    try:
        pipe.load_lora_weights(str(path))
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise EdgefusionError(
            f"could not apply the LoRA weights of {path} to its base {lora_base(path)}: {first_line(err)}"
        ) from err
    return pipe
