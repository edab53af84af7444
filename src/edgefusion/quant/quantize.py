"""The ``quantize`` stage: a pipeline folder in, a W8A16 pipeline folder out, and its report.

The report compares the quantized pipeline with the fp32 original on the same prompts and seeds:
U-Net bytes on disk, PSNR of the images and, for a model a registered evaluator claims (toy
models: :mod:`edgefusion.eval.evaluators`), the change of each of its metrics.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgefusion.atomic import atomic_output_dir, check_output_free
from edgefusion.errors import EdgefusionError
from edgefusion.eval.evaluators import default_prompts, evaluator_for
from edgefusion.eval.prompts import read_prompts
from edgefusion.limits import check_guidance, check_limit
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.pipeline.vae import load_decoder, swap_decoder
from edgefusion.provenance import PROVENANCE_FILE
from edgefusion.quant.io import (
    ACTIVATION_RANGES,
    is_quantized_folder,
    load_quantized_pipeline,
    save_quantized_pipeline,
)
from edgefusion.quant.w8a16 import W8A16Config, quantize_


@dataclass(frozen=True)
class ReportSettings:
    """Images compared by ``--report``: the first ``num_prompts`` of ``prompts_file``, by default
    the prompts the registered evaluator supplies (the toy eval prompts)."""

    num_prompts: int = 200
    steps: int | None = None  # None: the model kind's (25 steps; LCM: 2) and recorded guidance
    guidance: float | None = None
    seed: int = 0
    batch_size: int = 50
    prompts_file: Path | None = None

    def __post_init__(self) -> None:
        """Refuse settings the report would fail on only after the export or quantization."""
        check_limit(self.num_prompts, "--num-prompts")
        if self.steps is not None and self.steps < 1:
            raise EdgefusionError(f"--steps must be at least 1, got {self.steps}")
        if self.guidance is not None:
            check_guidance(self.guidance)

    def prompts(self) -> list[str]:
        return [row.text for row in read_prompts(self.prompts_file or default_prompts(), self.num_prompts)]

    def described(self, prompts: list[str], steps: int, guidance: float) -> dict[str, Any]:
        """How a report's images were made (what :func:`images_beside_original` settled on), for
        the report to say beside its numbers."""
        return {"prompts": len(prompts), "seed": self.seed, "steps": steps, "guidance": guidance}


def quantize_pipeline(
    src: str | Path,
    out: str | Path,
    config: W8A16Config | None = None,
    overwrite: bool = False,
    calibration_prompts: list[str] | None = None,
    calibration_steps: int | None = None,
    calibration_guidance: float | None = None,
) -> Path:
    """Quantize the U-Net of pipeline ``src`` to W8A16 (text encoder and VAE to fp16) into ``out``.

    With ``calibration_prompts``, also records per-tensor activation ranges of every quantized
    layer (``unet/activation_ranges.json``) from generating those prompts.
    """
    config = config or W8A16Config()
    out = Path(out)
    path = resolve_model_path(src)
    check_output_free(out, overwrite, [path])
    if is_quantized_folder(path):
        raise EdgefusionError(f"{src} is already W8A16-quantized; quantize the fp32/fp16 original instead")
    pipe = load_pipeline(path)
    quantize_(pipe.unet, config)
    steps, guidance = sampling_defaults(pipe, src, calibration_steps, calibration_guidance)
    with atomic_output_dir(out, overwrite) as staging:
        save_quantized_pipeline(pipe, staging, config)
        # The training provenance (and with it the guidance to sample with) travels along.
        if (path / "unet" / PROVENANCE_FILE).is_file():
            shutil.copy2(path / "unet" / PROVENANCE_FILE, staging / "unet" / PROVENANCE_FILE)
        if calibration_prompts:
            from edgefusion.quant.calibration import calibrate_activations

            ranges = calibrate_activations(
                load_quantized_pipeline(staging), calibration_prompts, steps, guidance
            )
            (staging / "unet" / ACTIVATION_RANGES).write_text(json.dumps(ranges, indent=1) + "\n")
    return out


def unet_bytes(path: str | Path) -> tuple[int, int]:
    """``(fp32 bytes, stored bytes)`` of a pipeline folder's U-Net weights: what an fp32
    safetensors file of the same tensors would take, and what the folder's files take."""
    from safetensors import safe_open

    unet_dir = resolve_model_path(path) / "unet"
    files = sorted(unet_dir.glob("*.safetensors"))
    if not files:
        raise EdgefusionError(f"{unet_dir} holds no .safetensors weights")
    fp32 = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key.endswith("weight_scale"):
                    continue
                numel = handle.get_slice(key).get_shape()
                fp32 += 4 * int(torch.tensor(numel).prod()) if numel else 4
    return fp32, sum(f.stat().st_size for f in files)


def psnr_db(images: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR of images in [0, 1] against a reference: 10 log10(1 / MSE), MSE over all pixels."""
    mse = float(((images.float() - reference.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(1.0 / mse)).item()


def images_beside_original(
    src: str | Path, candidate, settings: ReportSettings, vae: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str], int, float]:
    """Images of the original pipeline ``src`` (decoding with ``vae`` when given) and of
    ``candidate`` (a pipeline made from it) on the same prompts and seeds, at the settings' or the
    model kind's steps and guidance: ``(reference, images, prompts, steps, guidance)``."""
    prompts = settings.prompts()
    seeds = [settings.seed + i for i in range(len(prompts))]
    original = load_pipeline(src)
    if vae is not None:
        swap_decoder(original, load_decoder(vae))
    steps, guidance = sampling_defaults(original, src, settings.steps, settings.guidance)
    run = dict(steps=steps, guidance=guidance, batch_size=settings.batch_size)
    reference = generate_tensors(original, prompts, seeds, **run)
    return reference, generate_tensors(candidate, prompts, seeds, **run), prompts, steps, guidance


def quantization_report(
    src: str | Path, quantized: str | Path, settings: ReportSettings | None = None
) -> dict:
    """Compare the quantized pipeline with the fp32 original on the same prompts and seeds."""
    settings = settings or ReportSettings()
    reference, images, prompts, steps, guidance = images_beside_original(
        src, load_quantized_pipeline(quantized), settings
    )
    fp32_bytes, source_bytes = unet_bytes(src)
    _, quantized_bytes = unet_bytes(quantized)
    report = {
        "unet_bytes_fp32": fp32_bytes,
        "unet_bytes_source": source_bytes,
        "unet_bytes_quantized": quantized_bytes,
        "unet_size_ratio": quantized_bytes / fp32_bytes,
        "psnr_db": psnr_db(images, reference),
        "settings": {
            **settings.described(prompts, steps, guidance),
            "src": str(src),
            "quantized": str(quantized),
        },
    }
    plugin = evaluator_for(src)
    if plugin is not None:
        evaluator = plugin.load(None)
        before = plugin.headline(evaluator.score(reference, prompts))
        after = plugin.headline(evaluator.score(images, prompts))
        report[f"{plugin.name}_fp32"], report[f"{plugin.name}_w8a16"] = before, after
        report[f"{plugin.name}_delta"] = {k: after[k] - before[k] for k in before}
    return report
