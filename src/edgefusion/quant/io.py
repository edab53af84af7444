"""A W8A16 pipeline on disk, and back.

The folder is a diffusers pipeline folder whose text encoder and VAE are stored in fp16 (plain
``save_pretrained``), and whose ``unet/`` holds ``config.json``, ``quantization.json`` (the
:class:`W8A16Config`) and ``quantized.safetensors``: int8 weights, float32 per-channel scales
and 16-bit everything else. Plain diffusers cannot run int8 layers, so the U-Net loads through
:func:`load_quantized_pipeline`, which rebuilds the layer structure from the config first. The
folder's ``model_index.json`` names :class:`W8A16UNet2DConditionModel` as its U-Net class, so
plain diffusers, asked to load the folder, stops with an error that names that loader (or, where
edgefusion is not installed, says the folder needs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ModelMixin, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.load import as_generation_pipeline, cast_, quiet_progress_bars, set_scheduler
from edgefusion.quant.w8a16 import W8A16Config, quantize_, upcast_16bit_layers_on_cpu

QUANT_CONFIG = "quantization.json"
QUANT_WEIGHTS = "quantized.safetensors"
ACTIVATION_RANGES = "activation_ranges.json"
#: diffusers looks up the base classes of a component's class in the module ``model_index.json``
#: names; this module is that one for W8A16 U-Nets.
__all__ = ["ModelMixin", "W8A16UNet2DConditionModel"]


class W8A16UNet2DConditionModel(UNet2DConditionModel):
    """A ``UNet2DConditionModel`` whose Conv2d and Linear layers :func:`quantize_` made int8: the
    class a W8A16 folder names for its U-Net. It computes as its parent; only loading differs."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Refuse, naming the loader that can: diffusers cannot build int8 layers from a folder."""
        raise EdgefusionError(
            f"{pretrained_model_name_or_path} is a W8A16 U-Net written by `edgefusion quantize`: plain "
            "diffusers cannot build its int8 layers; load the pipeline with "
            "edgefusion.pipeline.load.load_pipeline(folder), or use `edgefusion generate --model folder`"
        )


def is_quantized_folder(path: str | Path) -> bool:
    return (Path(path) / "unet" / QUANT_CONFIG).exists()


def save_quantized_pipeline(pipe, out: Path, config: W8A16Config) -> None:
    """Write ``pipe`` (U-Net already quantized with ``config``) into the empty folder ``out``."""
    unet = pipe.unet
    cast_(pipe.text_encoder, torch.float16)
    cast_(pipe.vae, torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    unet_dir = out / "unet"
    for stale in unet_dir.glob("diffusion_pytorch_model*"):
        stale.unlink()  # save_pretrained wrote the int8 buffers under standard names; ours replace them
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    save_file(state, str(unet_dir / QUANT_WEIGHTS), metadata={"format": "pt", "quantization": "w8a16"})
    (unet_dir / QUANT_CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    index = json.loads((out / "model_index.json").read_text())
    index["unet"] = [__name__, W8A16UNet2DConditionModel.__name__]
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def read_quant_config(path: str | Path) -> W8A16Config:
    return W8A16Config.from_dict(json.loads((Path(path) / "unet" / QUANT_CONFIG).read_text()))


def load_quantized_unet(path: str | Path):
    """The W8A16 U-Net of a quantized pipeline folder, ready to run in its activation dtype."""
    unet_dir = Path(path) / "unet"
    config = read_quant_config(path)
    unet = W8A16UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(unet_dir)))
    quantize_(unet, config)  # builds the int8 layer structure; the real tensors are loaded next
    state = load_file(str(unet_dir / QUANT_WEIGHTS))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EdgefusionError(
            f"{unet_dir / QUANT_WEIGHTS} does not match its config ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors): re-run `edgefusion quantize`"
        )
    return unet.eval()


def load_quantized_pipeline(path: str | Path, scheduler: str | None = None, **_):
    """The generation pipeline (SD, or LCM for an LCM U-Net) with the W8A16 U-Net; every component
    computes in the config's 16-bit activation dtype (a dtype asked of the ``w8a16`` backend is
    ignored), on a CPU with float32 arithmetic inside each convolution and linear layer
    (:func:`~edgefusion.quant.w8a16.upcast_on_cpu`). ``scheduler`` swaps the sampler, as for any
    torch pipeline."""
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    if not is_quantized_folder(path):
        raise EdgefusionError(
            f"{path} is not a quantized pipeline (no unet/{QUANT_CONFIG}): run `edgefusion quantize`"
        )
    quiet_progress_bars()
    config = read_quant_config(path)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(path),
        unet=load_quantized_unet(path),
        dtype=config.dtype,
        safety_checker=None,
        requires_safety_checker=False,
    )
    for component in (pipe.unet, pipe.text_encoder, pipe.vae):
        upcast_16bit_layers_on_cpu(component)
    pipe = as_generation_pipeline(pipe)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    return pipe
