"""Backend names with a compute type, and the backend ``generate`` picks on a CPU when asked for
``auto`` (the command line's default).

A backend name is a loader of the registry (:mod:`edgefusion.pipeline.registry`), optionally with
its compute type appended: ``torch-bf16``, ``openvino-bf16``, ``torch-fp32``; fp32 when none is.

``auto`` is the fastest backend measured on a CPU whose images stay within 30 dB PSNR of torch
fp32's. On a 2-core AMD EPYC with AVX512-BF16, EdgeFusion-Tiny at 2 steps and 512 px with a
TAESD-layout decoder took 1.74 s per image in OpenVINO bf16, 3.17 s in OpenVINO fp32, 3.20 s in
torch bf16 and 6.38 s in torch fp32 (the bf16 images 57.6 and 54.3 dB from fp32's on
toy:edgefusion; docs/RESULTS.md, section 7, has the whole table and its command). So ``auto``
runs OpenVINO where it is installed, else torch, and computes in bf16 only where both hold:
oneDNN reports hardware bf16 (AVX512-BF16 or AMX; elsewhere it is emulated, 40x slower), and the
model is few-step (an LCM U-Net). 25-step samplers keep fp32 activations: bf16 rounding compounds
over 25 steps to about 30 dB on the toy BK-SDM-Tiny, at the floor. Folders that only torch loads
keep torch: LoRA folders, folders another backend claims (W8A16), and a sampler other than the
saved one, which the graph runtimes refuse.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.lcm import is_lcm
from edgefusion.pipeline.lora import is_lora_folder
from edgefusion.pipeline.registry import claiming_backend, get_backend

AUTO = "auto"
_DTYPES = {"-bf16": torch.bfloat16, "-fp32": torch.float32}
#: Loaders that compute in the type they are asked for (the ONNX graphs fix theirs).
_TYPED = ("torch", "torch-compile", "openvino")


def split_backend(name: str) -> tuple[str, torch.dtype]:
    """``(loader, compute type)`` of a backend name: ``openvino-bf16`` -> ``("openvino", bf16)``."""
    for suffix, dtype in _DTYPES.items():
        if name.endswith(suffix):
            loader = name[: -len(suffix)]
            if loader not in _TYPED:
                raise EdgefusionError(
                    f"backend {name!r}: a compute type can be given to {', '.join(_TYPED)}, not to {loader!r}"
                )
            return loader, dtype
    return name, torch.float32


def bf16_supported() -> bool:
    """Whether oneDNN runs bf16 on this CPU in hardware (AVX512 or AMX), not emulated."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def openvino_available() -> bool:
    """Whether the ``openvino`` backend is registered and its package installed."""
    try:
        get_backend("openvino")
    except EdgefusionError:
        return False
    return importlib.util.find_spec("openvino") is not None


def fastest_cpu_backend(path: Path, scheduler: str | None = None) -> str:
    """The backend ``auto`` stands for when generating from the model folder ``path`` (an ONNX
    export from ``edgefusion export`` runs in onnxruntime, as its graphs were written for; an
    OpenVINO IR export in OpenVINO, its float parts in bf16 where the CPU has it)."""
    if (path / "unet" / "openvino_model.xml").is_file():  # the IR export's layout (export.layout)
        return "openvino-bf16" if bf16_supported() else "openvino-fp32"
    if (path / "unet" / "model.onnx").is_file():
        return "onnxruntime"
    graph_ready = (
        scheduler is None
        and (path / "model_index.json").is_file()
        and not is_lora_folder(path)
        and claiming_backend(path) is None
    )
    loader = "openvino" if graph_ready and openvino_available() else "torch"
    return f"{loader}-bf16" if bf16_supported() and _is_few_step(path) else f"{loader}-fp32"


def _is_few_step(path: Path) -> bool:
    """Whether the folder's U-Net embeds the guidance scale (LCM-distilled: 1-4 steps). An
    unreadable config answers no: the loader that runs next reports it with the folder's name."""
    try:
        config = json.loads((path / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and is_lcm(config)
