"""Parameters and MACs per component, counted by torch itself on the meta device.

The literature mixes two conventions, so both are reported:

- ``macs``: multiply-accumulates of the layers that hold weights (convolutions and linear
  layers). This is the convention of BK-SDM's figures (SD-v1.4 U-Net: 338.7G at 512 px).
- ``attention_macs``: the weight-free products of attention, Q·K^T and softmax(.)·V, which grow
  with the square of the token count (about 63G for the SD-v1.4 U-Net at 512 px).

Models are built under ``torch.device("meta")`` and run once under
:class:`torch.utils.flop_counter.FlopCounterMode`: no memory is allocated and no formula is kept
by hand. Attention runs through diffusers' plain ``AttnProcessor`` (and transformers' eager
attention) so that its products appear as ordinary batched matmuls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgefusion.arch.removal import plan_removal
from edgefusion.errors import EdgefusionError
from edgefusion.limits import check_image_size, check_traceable, size_factor
from edgefusion.pipeline.configs import vae_scale_factor
from edgefusion.pipeline.sources import resolve_source

#: Text length of one SD prompt (CLIP's context), used when no text-encoder config says otherwise.
DEFAULT_TEXT_LENGTH = 77

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class ComponentCount:
    """Parameters of one component and MACs of one call of it, batch 1."""

    params: int
    macs: int
    attention_macs: int


@dataclass(frozen=True)
class ModelCount:
    """Counts per component (``unet``, ``text_encoder``, ``vae_decoder`` where present) for one
    U-Net call at ``resolution`` px, i.e. a ``latent_size`` x ``latent_size`` latent."""

    model: str
    variant: str | None
    resolution: int
    latent_size: int
    components: dict[str, ComponentCount]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``edgefusion info --json``."""
        return asdict(self)


def count_model(
    src: str | Path | Mapping[str, Any], variant: str | None = None, resolution: int = 512
) -> ModelCount:
    """Count parameters and MACs of a model's components (``edgefusion info``).

    ``src`` is anything :func:`~edgefusion.pipeline.sources.resolve_source` accepts, or a U-Net config.
    ``variant`` applies BK-SDM's block removal to the U-Net first. Only configs are read.
    """
    if isinstance(src, Mapping):
        name, configs = "<config>", {"unet": dict(src)}
    else:
        name, configs = str(src), resolve_source(src).configs
    unet_config = configs["unet"]
    if variant is not None:
        unet_config = plan_removal(unet_config, variant).student_config
    scale_factor = vae_scale_factor(configs.get("vae"))
    check_image_size(resolution, size_factor(unet_config, scale_factor), "resolution")
    latent_size = resolution // scale_factor
    check_traceable(latent_size, unet_config["block_out_channels"][0])
    text_length = DEFAULT_TEXT_LENGTH
    components: dict[str, ComponentCount] = {}
    if "text_encoder" in configs:
        text_length = configs["text_encoder"].get("max_position_embeddings", DEFAULT_TEXT_LENGTH)
        components["text_encoder"] = count_text_encoder(configs["text_encoder"], text_length)
    components["unet"] = count_unet(unet_config, latent_size, text_length)
    if "vae" in configs:
        components["vae_decoder"] = count_vae_decoder(configs["vae"], latent_size)
    return ModelCount(name, variant, resolution, latent_size, components)


def count_macs(run: Callable[[], object], model: nn.Module) -> tuple[int, int]:
    """Run ``run()`` once under FlopCounterMode; return (weight-layer MACs, other MACs).

    Hooks on every convolution and linear layer of ``model`` attribute the FLOPs counted while the
    layer runs to weight layers (a linear layer on a 3-D input shows up as mm/addmm/bmm, so the op
    name alone cannot tell). What remains are attention's weight-free products. MACs = FLOPs / 2.
    """
    counter = FlopCounterMode(display=False)
    starts: list[int] = []
    weight_flops = 0

    def before(_module: nn.Module, _args: object) -> None:
        starts.append(counter.get_total_flops())

    def after(_module: nn.Module, _args: object, _output: object) -> None:
        nonlocal weight_flops
        weight_flops += counter.get_total_flops() - starts.pop()

    handles = []
    for module in model.modules():
        if isinstance(module, _WEIGHT_LAYERS):
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with counter, torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return weight_flops // 2, (counter.get_total_flops() - weight_flops) // 2


def count_unet(
    config: Mapping[str, Any], latent_size: int, text_length: int = DEFAULT_TEXT_LENGTH
) -> ComponentCount:
    """One denoising call of a UNet2DConditionModel: batch 1, text of ``text_length`` tokens."""
    unet = _build_on_meta(lambda: UNet2DConditionModel.from_config(dict(config)))
    unet.set_attn_processor(AttnProcessor())
    context_width = config.get("cross_attention_dim", 1280)
    if isinstance(context_width, list | tuple):
        context_width = context_width[0]
    sample = torch.empty(1, unet.config.in_channels, latent_size, latent_size, device="meta")
    timestep = torch.tensor([999], device="meta")
    text = torch.empty(1, text_length, context_width, device="meta")
    macs, attention_macs = count_macs(lambda: unet(sample, timestep, encoder_hidden_states=text), unet)
    return ComponentCount(_num_params(unet), macs, attention_macs)


def count_unet_parameters(config: Mapping[str, Any]) -> int:
    """Parameters of the U-Net a config describes, without allocating them."""
    return _num_params(_build_on_meta(lambda: UNet2DConditionModel.from_config(dict(config))))


def count_text_encoder(config: Mapping[str, Any], text_length: int = DEFAULT_TEXT_LENGTH) -> ComponentCount:
    """One call of a transformers text encoder (e.g. CLIPTextModel) on ``text_length`` tokens."""
    settings = dict(config)
    model_type = settings.pop("model_type", None)
    if model_type is None:
        raise EdgefusionError("text encoder config has no model_type: it is not a transformers config")
    text_config = transformers.AutoConfig.for_model(model_type, **settings)
    encoder = _build_on_meta(
        lambda: transformers.AutoModel.from_config(text_config, attn_implementation="eager")
    )
    token_ids = torch.zeros(1, text_length, dtype=torch.long, device="meta")
    macs, attention_macs = count_macs(lambda: encoder(token_ids), encoder)
    return ComponentCount(_num_params(encoder), macs, attention_macs)


def count_vae_decoder(config: Mapping[str, Any], latent_size: int) -> ComponentCount:
    """One latent-to-image decode: the VAE's decoder (and post-quant conv) on one latent."""
    vae_class = getattr(diffusers, config.get("_class_name", "AutoencoderKL"), None)
    if vae_class is None or not hasattr(vae_class, "decode"):
        raise EdgefusionError(f"VAE class {config.get('_class_name')!r} is not a diffusers autoencoder")
    vae = _build_on_meta(lambda: vae_class.from_config(dict(config)))
    vae.set_attn_processor(AttnProcessor())
    decode_path = [m for m in (vae.decoder, getattr(vae, "post_quant_conv", None)) if m is not None]
    channels = vae.config.latent_channels
    latent = torch.empty(1, channels, latent_size, latent_size, device="meta")
    macs, attention_macs = count_macs(lambda: vae.decode(latent), vae)
    return ComponentCount(sum(_num_params(m) for m in decode_path), macs, attention_macs)


def _build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build().eval()


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
