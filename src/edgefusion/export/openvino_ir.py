"""OpenVINO IR export, with int8 activations in the U-Net: ``edgefusion export --format openvino``.

The folder has the ONNX export's layout (tokenizer, scheduler, ``edgefusion_export.json``) with
each graph as OpenVINO IR (``openvino_model.xml`` and ``.bin``) instead of ``model.onnx``, so the
``openvino`` backend of ``generate``, ``eval`` and ``bench`` runs it as it runs an ONNX export.

Precisions:

- ``fp32``: the graphs as they are; the backend picks the compute type (``openvino-bf16``).
- ``w8a8``: the U-Net's convolutions and matmuls take int8 weights *and* int8 activations
  (NNCF post-training quantization, its transformer preset: SmoothQuant moves activation
  outliers into the weights, then per-tensor activation scales and fast bias correction);
  everything else, text encoder and decoder included, stays float. On CPUs with int8 dot-product
  instructions (AVX512-VNNI, AMX) an int8 matmul does twice the MACs per cycle of a bf16 one,
  which no float precision reaches: the 512 px EdgeFusion-Tiny U-Net call measured 1.57x faster
  than in bf16 on a 2-core AVX512-BF16 EPYC (0.48 against 0.76 s). The paper keeps 16-bit
  activations in the U-Net (W8A16) and does not report int8 ones; on the toy EdgeFusion this PTQ
  keeps 41 dB against torch fp32 images and its 1-object accuracy within 0.006 on two seeds
  (docs/RESULTS.md, section 7).

Activation scales come from calibration: the U-Net inputs of the model's own sampling (its
default steps and guidance, at the export's traced size) for ``calibration_prompts`` prompts,
one seed each: prompts x steps U-Net calls in fp32 (x2 with CFG), so a 25-step model wants fewer
prompts than an LCM; NNCF's statistics use at most :data:`MAX_SAMPLES` of them, evenly spaced.
Calibrate on prompts like the ones users will write, not on the evaluation set.
NNCF is the ``openvino`` extra's second package.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgefusion.atomic import atomic_output_dir, check_output_free
from edgefusion.errors import EdgefusionError
from edgefusion.export.layout import EXPORT_INFO, IR_FILE
from edgefusion.export.openvino import INSTALL_HINT, require_openvino

PRECISIONS = ("fp32", "w8a8")
COMPONENTS = ("text_encoder", "unet", "vae_decoder")
MAX_SAMPLES = 300  # NNCF's own default subset size
CALIBRATION_SEED = 1_000_000  # far from the seeds evaluations use (0, 1, ...)


def require_nncf():
    """The ``nncf`` module, or an error naming the extra that installs it."""
    try:
        import nncf
    except ImportError:
        raise EdgefusionError(
            f"--precision w8a8 quantizes with NNCF, which is not installed: {INSTALL_HINT}"
        ) from None
    return nncf


def export_openvino(
    src: str | Path,
    out: str | Path,
    precision: str = "fp32",
    size: int | None = None,
    overwrite: bool = False,
    vae: str | Path | None = None,
    calibration_prompts: list[str] | None = None,
) -> Path:
    """Export pipeline ``src`` to OpenVINO IR in ``out`` (``w8a8``: calibrated on the model's own
    U-Net inputs for ``calibration_prompts``); ``size`` and ``vae`` as in the ONNX export."""
    from edgefusion.export.onnx import export_pipeline
    from edgefusion.pipeline.sources import resolve_model_path

    if precision not in PRECISIONS:
        raise EdgefusionError(
            f"unknown OpenVINO precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    openvino = require_openvino()
    if precision == "w8a8":
        require_nncf()
        if not calibration_prompts:
            raise EdgefusionError("--precision w8a8 needs calibration prompts")
    out = Path(out)
    check_output_free(out, overwrite, [resolve_model_path(src), vae])
    with (
        atomic_output_dir(out, overwrite) as staging,
        tempfile.TemporaryDirectory(prefix=".onnx-", dir=staging.parent) as tmp,  # beside out: GBs at 512 px
    ):
        onnx_dir = export_pipeline(src, Path(tmp) / "onnx", "fp32", height=size, width=size, vae=vae)
        shutil.copytree(onnx_dir, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.onnx*"))
        core = openvino.Core()
        for component in COMPONENTS:
            model = core.read_model(str(onnx_dir / component / "model.onnx"))
            if component == "unet" and precision == "w8a8":
                samples = unet_calibration_inputs(onnx_dir, calibration_prompts, Path(tmp) / "cache")
                model = quantize_unet(model, samples)
            openvino.save_model(model, str(staging / component / IR_FILE), compress_to_fp16=False)
        info = json.loads((onnx_dir / EXPORT_INFO).read_text())
        info |= {"format": "openvino", "precision": precision}
        if precision == "w8a8":
            info["unet_weights"] = "int8 weights and activations (NNCF PTQ, SmoothQuant)"
            info["calibration_prompts"] = len(calibration_prompts)
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return out


def unet_calibration_inputs(onnx_dir: Path, prompts: list[str], cache: Path) -> list[dict[str, np.ndarray]]:
    """The U-Net inputs of sampling ``prompts`` (one image each, the model's defaults) from the
    fp32 export ``onnx_dir`` in OpenVINO: the activations the quantized U-Net will see."""
    from edgefusion.export.openvino import load_openvino_pipeline
    from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults

    pipe = load_openvino_pipeline(onnx_dir, torch.float32, cache=cache)
    steps, guidance = sampling_defaults(pipe, onnx_dir, None, None)
    unet, seen = pipe.unet, []

    def recording_unet(**inputs: torch.Tensor) -> torch.Tensor:
        seen.append({name: value.numpy().copy() for name, value in inputs.items()})
        return unet(**inputs)

    pipe.unet = recording_unet
    seeds = [CALIBRATION_SEED + i for i in range(len(prompts))]
    generate_tensors(pipe, prompts, seeds, steps, guidance, batch_size=1)
    return seen


def quantize_unet(model, samples: list[dict[str, np.ndarray]]):
    """``model`` (an OpenVINO U-Net) with int8 weights and activations, calibrated on ``samples``."""
    nncf = require_nncf()
    samples = samples[:: -(-len(samples) // MAX_SAMPLES)]  # every k-th, at most MAX_SAMPLES
    return nncf.quantize(
        model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples)
    )
