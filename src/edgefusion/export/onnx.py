"""ONNX export of a Stable Diffusion pipeline: text encoder, U-Net and VAE decoder.

Folder layout (benchmarks and :func:`~edgefusion.export.runtime.load_onnx_pipeline` rely on it):

- ``text_encoder/model.onnx``: ``input_ids`` (int64, batch x 77) -> ``last_hidden_state``
- ``unet/model.onnx``: ``sample``, ``timestep`` (float, one per batch item),
  ``encoder_hidden_states`` and, for LCM U-Nets, ``timestep_cond`` -> ``out_sample``
- ``vae_decoder/model.onnx``: ``latent_sample`` -> ``sample`` (images in [-1, 1])
- ``tokenizer/``, ``scheduler/``, and ``edgefusion_export.json`` (precision, dtypes, shapes).

Batch and spatial axes are dynamic, except the U-Net's spatial axes when its attention is tiled
(``unet/tiling.json``): tiles are planned for one resolution and traced as fixed slices.

Precisions: ``fp32``; ``fp16`` (every component in half precision, for providers with fp16
kernels; onnxruntime's CPU provider cannot load the traced fp16 CLIP text encoder, whose
LayerNormalization mixes fp16 and fp32); ``w8a16``, the paper's deployment: U-Net weights as int8
``DequantizeLinear`` (QDQ) nodes, per output channel, with the same int8 values and scales as
:func:`edgefusion.quant.w8a16.quantize_weight`. In ``w8a16`` the activations, text encoder and VAE
decoder stay fp32 in the graphs, so that onnxruntime's CPU provider runs them; an NPU toolchain
picks its own 16-bit activation format from the QDQ weights and the calibrated ranges
(``edgefusion quantize --calibrate``).

We use the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``): on torch 2.13 it
exports diffusers' U-Net, CLIP and VAE reliably and needs no onnxscript; the dynamo exporter is
the default there but adds a dependency and fails on some diffusers control flow.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from edgefusion.atomic import atomic_output_dir, check_output_free
from edgefusion.errors import EdgefusionError
from edgefusion.export.layout import EXPORT_INFO, save_onnx
from edgefusion.export.qdq import quantize_onnx_weights
from edgefusion.limits import check_image_size
from edgefusion.pipeline.lcm import is_lcm
from edgefusion.pipeline.load import cast_, load_pipeline
from edgefusion.pipeline.sampling import check_sampling_memory, native_size, pipeline_size_factor
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.pipeline.vae import decoder_folder, load_decoder, swap_decoder
from edgefusion.provenance import PROVENANCE_FILE
from edgefusion.quant.io import is_quantized_folder
from edgefusion.quant.w8a16 import W8A16Config
from edgefusion.tiling.layers import TILING_FILE, read_tiling, tile_attention_

PRECISIONS = ("fp32", "fp16", "w8a16")
OPSET = 17


class _TextEncoder(nn.Module):
    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, return_dict=False)[0]


class _UNet(nn.Module):
    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None) -> torch.Tensor:
        return self.unet(
            sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond, return_dict=False
        )[0]


class _VaeDecoder(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


def export_pipeline(
    src: str | Path,
    out: str | Path,
    precision: str = "fp32",
    height: int | None = None,
    width: int | None = None,
    overwrite: bool = False,
    vae: str | Path | None = None,
) -> Path:
    """Export pipeline ``src`` (a diffusers folder, ``toy:NAME``, or a tiled folder) to ``out``.

    ``height``/``width`` (pixels) only set the example input the graphs are traced with (and the
    fixed U-Net size of a tiled model); by default the model's native size. Either must be a
    positive multiple of the model's size factor (:func:`edgefusion.limits.size_factor`).
    ``vae`` exports another decoder as ``vae_decoder`` (a tiny one:
    :func:`edgefusion.pipeline.vae.load_decoder`).
    """
    if precision not in PRECISIONS:
        raise EdgefusionError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    out = Path(out)
    path = resolve_model_path(src)
    decoder_path = decoder_folder(vae) if vae is not None else None
    check_output_free(out, overwrite, [path, decoder_path])
    if is_quantized_folder(path):
        raise EdgefusionError(
            f"{src} is a W8A16 torch folder; export its fp32 original with --precision w8a16 instead"
        )
    decoder = load_decoder(decoder_path) if decoder_path is not None else None
    pipe = load_pipeline(path)
    if decoder is not None:
        swap_decoder(pipe, decoder)
    tiling = read_tiling(path)
    if tiling:
        tile_attention_(pipe.unet, tiling)
        planned = json.loads((path / "unet" / TILING_FILE).read_text())["resolution"]
        height, width = planned if height is None else height, planned if width is None else width
    _check_exportable(pipe)
    height, width = _traced_size(pipe, height, width)
    latent = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    quant_config = W8A16Config() if precision == "w8a16" else None
    with atomic_output_dir(out, overwrite) as staging:
        _export_components(pipe, staging, precision, latent, bool(tiling), quant_config)
        info = _export_info(pipe, str(src), precision, latent, tiling, quant_config)
        if vae is not None:
            info["vae"] = str(vae)
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        # The training provenance travels with the graphs (generate reads an LCM's guidance range).
        if (path / "unet" / PROVENANCE_FILE).is_file():
            shutil.copy2(path / "unet" / PROVENANCE_FILE, staging / "unet" / PROVENANCE_FILE)
    return out


def _traced_size(pipe, height: int | None, width: int | None) -> tuple[int, int]:
    """The image size the graphs are traced at: the model's native one where not given; a given
    one must be a multiple of the model's size factor, and one call at it must fit in memory."""
    factor = pipeline_size_factor(pipe)
    height = native_size(pipe) if height is None else check_image_size(height, factor, "--size")
    width = native_size(pipe) if width is None else check_image_size(width, factor, "--size")
    check_sampling_memory(pipe, 1, height, width)
    return height, width


def _dtype(precision: str) -> torch.dtype:
    return torch.float16 if precision == "fp16" else torch.float32


def _export_components(
    pipe, staging: Path, precision: str, latent: tuple[int, int], tiled: bool, quant_config
) -> None:
    """Tokenizer, scheduler and the three graphs of ``pipe`` into ``staging``."""
    dtype = _dtype(precision)
    text_len = pipe.tokenizer.model_max_length
    pipe.tokenizer.save_pretrained(staging / "tokenizer")
    pipe.scheduler.save_pretrained(staging / "scheduler")
    _export(
        _TextEncoder(cast_(pipe.text_encoder, dtype)),
        (torch.ones(1, text_len, dtype=torch.long),),
        staging / "text_encoder" / "model.onnx",
        ["input_ids"],
        ["last_hidden_state"],
        {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}},
    )
    export_unet(
        cast_(pipe.unet, dtype),
        staging / "unet" / "model.onnx",
        latent,
        text_len,
        dynamic_spatial=not tiled,
        quant_config=quant_config,
    )
    spatial = {0: "batch", 2: "height", 3: "width"}
    _export(
        _VaeDecoder(cast_(pipe.vae, dtype)),
        (torch.randn(1, pipe.vae.config.latent_channels, *latent, dtype=dtype),),
        staging / "vae_decoder" / "model.onnx",
        ["latent_sample"],
        ["sample"],
        {"latent_sample": spatial, "sample": spatial},
    )


def _export_info(
    pipe, src: str, precision: str, latent: tuple[int, int], tiling: dict[str, int] | None, quant_config
) -> dict:
    """What ``edgefusion_export.json`` records: precision, dtypes, and the shapes the runtime needs."""
    dtype_name = str(_dtype(precision)).removeprefix("torch.")
    return {
        "format": "onnx",
        "opset": OPSET,
        "precision": precision,
        "source": src,
        "dtypes": {"text_encoder": dtype_name, "unet": dtype_name, "vae_decoder": dtype_name},
        "unet_weights": "int8 QDQ per output channel" if quant_config else dtype_name,
        "quantization": quant_config.to_dict() if quant_config else None,
        "vae_scale_factor": pipe.vae_scale_factor,
        "size_factor": pipeline_size_factor(pipe),
        "vae_scaling_factor": pipe.vae.config.scaling_factor,
        "latent_channels": pipe.vae.config.latent_channels,
        "text_max_length": pipe.tokenizer.model_max_length,
        "cross_attention_dim": pipe.unet.config.cross_attention_dim,
        "time_cond_proj_dim": pipe.unet.config.time_cond_proj_dim,
        "sample_size": list(latent),
        "dynamic_spatial": not tiling,
        "tiling": tiling,
    }


def export_unet(
    unet,
    file: Path,
    latent_size: tuple[int, int],
    text_len: int = 77,
    dynamic_spatial: bool = True,
    quant_config=None,
) -> None:
    """Export one U-Net (in its current dtype) to ``file``; with a :class:`W8A16Config`, its
    weights become int8 QDQ. Used alone for U-Net-only checks (full-size BK-SDM-Tiny)."""
    dtype = unet.dtype
    spatial = {2: "height", 3: "width"} if dynamic_spatial else {}
    inputs = {
        "sample": torch.randn(2, unet.config.in_channels, *latent_size, dtype=dtype),
        "timestep": torch.full((2,), 500.0, dtype=dtype),
        "encoder_hidden_states": torch.randn(2, text_len, unet.config.cross_attention_dim, dtype=dtype),
    }
    axes = {
        "sample": {0: "batch", **spatial},
        "timestep": {0: "batch"},
        "encoder_hidden_states": {0: "batch", 1: "sequence"},
        "out_sample": {0: "batch", **spatial},
    }
    if is_lcm(unet):
        inputs["timestep_cond"] = torch.randn(2, unet.config.time_cond_proj_dim, dtype=dtype)
        axes["timestep_cond"] = {0: "batch"}
    _export(_UNet(unet), tuple(inputs.values()), file, list(inputs), ["out_sample"], axes)
    if quant_config is not None:
        quantize_onnx_weights(file, quant_config, prefix="unet.")  # _UNet holds it as .unet


def _check_exportable(pipe) -> None:
    """Refuse pipelines this exporter does not cover, with a clear message, before any work."""
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    config = pipe.unet.config
    if not isinstance(pipe.unet, UNet2DConditionModel) or not isinstance(
        pipe.vae, AutoencoderKL | AutoencoderTiny
    ):
        raise EdgefusionError(
            "only UNet2DConditionModel pipelines with an AutoencoderKL or AutoencoderTiny can be exported"
        )
    unsupported = {
        "addition_embed_type": config.addition_embed_type,
        "class_embed_type": config.class_embed_type,
        "encoder_hid_dim_type": config.encoder_hid_dim_type,
    }
    used = [name for name, value in unsupported.items() if value is not None]
    if used:
        raise EdgefusionError(
            "the ONNX exporter handles SD-v1/v2-style U-Nets only; "
            f"this one sets {', '.join(used)} (SDXL-like)"
        )


def _export(
    model: nn.Module, args: tuple, file: Path, inputs: list[str], outputs: list[str], axes: dict
) -> None:
    """Trace ``model`` into ``file``; tensors go to ``model.onnx.data`` when over protobuf's 2 GB."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            args,
            str(file),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    if all(written == file for written in file.parent.iterdir()):
        return  # under 2 GB: one self-contained file already
    import onnx

    proto = onnx.load(str(file))
    for stale in file.parent.iterdir():
        if stale != file:
            stale.unlink()  # per-tensor files of a large export; rewritten as one below
    save_onnx(proto, file)
