"""LoRA adapters for a training stage, through ``peft``, written the way diffusers loads them.

LoRA (Hu et al., 2022) trains a low-rank update ``B A`` beside frozen projections. Here the U-Net's
attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, the layers diffusers' own
DreamBooth LoRA script adapts) and, when asked, the text encoder's (``q_proj``, ``k_proj``,
``v_proj``, ``out_proj``) gain adapters with ``peft``, the library diffusers' loaders build on.
``B`` starts at zero, so an adapted model computes exactly what its base does until training
moves it.

The output is diffusers' own LoRA file, ``pytorch_lora_weights.safetensors``, written by
``StableDiffusionPipeline.save_lora_weights`` from ``get_peft_model_state_dict`` converted with
``convert_state_dict_to_diffusers``, with each adapter's config as metadata (so an alpha other
than the rank loads with the right scale): ``pipe.load_lora_weights(folder)`` personalizes any
copy of the base model. Beside it, ``edgefusion.json`` records the base, so the folder is also a
model spec of its own (:mod:`edgefusion.pipeline.lora`).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgefusion.config import require
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.lora import LORA_WEIGHTS

#: diffusers' ``Attention`` projections: what diffusers' DreamBooth LoRA script adapts.
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
#: transformers' ``CLIPAttention`` projections.
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class LoRAConfig:
    """LoRA instead of a full fine-tune, when ``rank`` is set.

    - ``rank``: the rank of each update (4-16 is usual); null trains every weight instead.
    - ``alpha``: the update is scaled by ``alpha / rank``; null takes the rank (scale 1).
    - ``dropout``: dropout on the adapters' input.
    - ``unet_targets`` / ``text_encoder_targets``: the module names that gain adapters.
    - ``sample_on``: the model the adapters are recorded for, and sample on (null: the trained
      one). Adapters trained on the model an LCM was distilled from fit the LCM, whose projections
      have the same shapes, and compose with its few-step sampling as LCM-LoRA does: one training
      personalizes both the many-step model and its LCM.
    """

    rank: int | None = None
    alpha: float | None = None
    dropout: float = 0.0
    unet_targets: list[str] = field(default_factory=lambda: list(UNET_TARGETS))
    text_encoder_targets: list[str] = field(default_factory=lambda: list(TEXT_ENCODER_TARGETS))
    sample_on: str | None = None

    def __post_init__(self) -> None:
        require(self.rank is None or self.rank >= 1, "lora.rank must be at least 1 (or null: full fine-tune)")
        require(self.alpha is None or self.alpha > 0, "lora.alpha must be positive (or null: the rank)")
        require(0 <= self.dropout < 1, "lora.dropout must lie in [0, 1)")
        require(bool(self.unet_targets), "lora.unet_targets must name at least one module")
        require(
            self.sample_on is None or self.rank is not None,
            "lora.sample_on needs lora.rank: only adapters carry over to another model",
        )


def check_text_encoder_lora() -> None:
    """Refuse text-encoder adapters that could not be loaded back: transformers adds and loads a
    text encoder's adapters (diffusers' ``load_lora_weights`` goes through it) only with a peft at
    least as new as it requires, which may be newer than the one diffusers' U-Net adapters need."""
    from packaging.version import Version
    from transformers.integrations.peft import MIN_PEFT_VERSION

    installed = importlib.metadata.version("peft")
    if Version(installed) < Version(MIN_PEFT_VERSION):
        raise EdgefusionError(
            f"LoRA on the text encoder needs peft >= {MIN_PEFT_VERSION} with this transformers "
            f"(installed: {installed}): upgrade peft, or set train_text_encoder=false (U-Net adapters alone)"
        )


def check_adapters_fit(trained: Path, sample_on: Path, targets: list[str]) -> None:
    """Refuse, before training, adapters that would not load on ``sample_on``: every U-Net
    projection named by ``targets`` in the pipeline folder ``trained`` must exist in ``sample_on``'s
    U-Net with the same shape (both built from their configs on the meta device: no weights read)."""
    mine, theirs = _target_shapes(trained, targets), _target_shapes(sample_on, targets)
    for name, shape in mine.items():
        if theirs.get(name) != shape:
            found = "is missing" if name not in theirs else f"is {list(theirs[name])}"
            raise EdgefusionError(
                f"lora.sample_on {sample_on} does not fit adapters trained on {trained}: the U-Net "
                f"projection {name} is {list(shape)} there and {found} in {sample_on}; adapters carry "
                "over only between U-Nets of the same layout (an LCM and the model it was distilled from)"
            )


def _target_shapes(pipeline: Path, targets: list[str]) -> dict[str, tuple[int, ...]]:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(pipeline / "unet"))
    return {
        name: tuple(module.weight.shape)
        for name, module in unet.named_modules()
        if any(name == t or name.endswith(f".{t}") for t in targets) and hasattr(module, "weight")
    }


def add_lora(model: nn.Module, config: LoRAConfig, targets: list[str], seed: int) -> nn.Module:
    """Freeze ``model`` (a diffusers U-Net or a transformers text encoder) and give the modules
    named ``targets`` trainable float32 adapters; ``seed`` fixes the initial ``A`` matrices."""
    from peft import LoraConfig

    model.requires_grad_(False)
    torch.manual_seed(seed)
    model.add_adapter(
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha or config.rank,
            lora_dropout=config.dropout,
            init_lora_weights="gaussian",
            target_modules=targets,
        )
    )
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model


def save_lora_weights(folder: Path, unet: nn.Module, text_encoder: nn.Module | None) -> Path:
    """Write the adapters of ``unet`` (and ``text_encoder``, when it has some) to ``folder`` as
    diffusers' ``pytorch_lora_weights.safetensors``, each adapter's config as metadata."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers, metadata = {}, {}
    for name, model in (("unet", unet), ("text_encoder", text_encoder)):
        if model is None:
            continue
        state = get_peft_model_state_dict(model)
        layers[f"{name}_lora_layers"] = {
            key: value.detach().float().cpu().contiguous()
            for key, value in convert_state_dict_to_diffusers(state).items()
        }
        metadata[f"{name}_lora_adapter_metadata"] = model.peft_config["default"].to_dict()
    StableDiffusionPipeline.save_lora_weights(folder, **layers, **metadata, weight_name=LORA_WEIGHTS)
    return folder / LORA_WEIGHTS
