"""The graph bench backends, ``onnxruntime`` and ``openvino``: time the components of an ONNX
export (``edgefusion.export``).

The export's layout is ``text_encoder/model.onnx`` (``input_ids``), ``unet/model.onnx``
(``sample``, ``timestep``, ``encoder_hidden_states``, and ``timestep_cond`` for LCM U-Nets) and
``vae_decoder/model.onnx`` (``latent_sample``). A built-in architecture is first saved as a
pipeline folder, then exported; both are cached under ``work_dir`` and reused by later runs. With
another decoder (``--vae``) a second export holds it as its ``vae_decoder``, timed as
``tiny_decoder``; OpenVINO compiles the same graphs onnxruntime runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edgefusion.atomic import atomic_output_dir
from edgefusion.bench.measure import bind
from edgefusion.bench.models import ARCHITECTURES, PipelineParts
from edgefusion.export.onnx import export_pipeline
from edgefusion.export.runtime import ort_session

_SUBFOLDERS = {"text_encoder": "text_encoder", "unet_step": "unet", "vae_decoder": "vae_decoder"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def placeholder_tokenizer(folder: Path, length: int):
    """A CLIP tokenizer that knows only its two special tokens, for prompts of ``length`` tokens.

    A built-in architecture's pipeline needs one to be saved and exported, but the real vocabulary
    is not shipped and not needed: token ids only feed the exporter's trace, the graphs do not
    depend on their values, and the benchmark feeds random ids.
    """
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    tokenizer.model_max_length = length  # the exporter traces prompts of this length
    return tokenizer


def save_builtin_pipeline(parts: PipelineParts, folder: Path) -> Path:
    """A loadable pipeline folder of a built-in architecture (random weights, a
    :func:`placeholder_tokenizer`), so the exporter can read it."""
    from diffusers import LCMScheduler, PNDMScheduler, StableDiffusionPipeline

    scheduler = (
        LCMScheduler(steps_offset=1) if parts.lcm else PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    )
    tokenizer = placeholder_tokenizer(Path(folder) / "tokenizer", parts.text_length)
    pipe = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=tokenizer,
        unet=parts.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def slug(name: str | Path) -> str:
    """``name`` as one folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_")


def pipeline_folder(name: str, parts: PipelineParts, work_dir: Path) -> Path:
    """The pipeline folder of ``name``: its own, or for a built-in architecture one saved under
    ``work_dir`` on first use (from fp32 weights: call it before a torch backend casts them)."""
    if name not in ARCHITECTURES:
        from edgefusion.pipeline.sources import resolve_model_path

        return resolve_model_path(name)
    folder = Path(work_dir) / slug(name) / "pipeline"
    if not (folder / "model_index.json").exists():
        with atomic_output_dir(folder, overwrite=True) as staging:
            save_builtin_pipeline(parts, staging)
    return folder


def exported_folder(name: str, parts: PipelineParts, work_dir: Path, vae: Path | None = None) -> Path:
    """The fp32 ONNX export of ``name`` (decoding with ``vae`` when given), made on first use."""
    folder = Path(work_dir) / slug(name) / ("onnx-fp32" + (f"-vae-{slug(vae)}" if vae else ""))
    if all((folder / sub / "model.onnx").exists() for sub in _SUBFOLDERS.values()):
        return folder
    return export_pipeline(pipeline_folder(name, parts, work_dir), folder, precision="fp32", vae=vae)


def graph_files(name: str, parts: PipelineParts, work_dir: Path, vae: Path | None = None) -> dict[str, Path]:
    """The ONNX graph of each component, ``tiny_decoder`` from a second export when ``vae`` is given."""
    folder = exported_folder(name, parts, work_dir)
    files = {component: folder / sub / "model.onnx" for component, sub in _SUBFOLDERS.items()}
    if vae is not None:
        files["tiny_decoder"] = exported_folder(name, parts, work_dir, vae) / "vae_decoder" / "model.onnx"
    return files


def onnx_runners(
    files: dict[str, Path], inputs: dict[str, dict[str, torch.Tensor]]
) -> dict[str, Callable[[], object]]:
    """One callable per component running its onnxruntime session on the given inputs."""
    threads = torch.get_num_threads()
    return {c: _runner(ort_session(file, threads), inputs[c]) for c, file in files.items()}


def openvino_runners(
    files: dict[str, Path], inputs: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype
) -> dict[str, Callable[[], object]]:
    """One callable per component running its graph compiled by OpenVINO at ``dtype``'s precision,
    called as the openvino backend calls it (:class:`~edgefusion.export.openvino.OpenVinoSession`)."""
    from edgefusion.export.openvino import OpenVinoSession

    threads = torch.get_num_threads()
    return {c: bind(OpenVinoSession(file, dtype, threads), inputs[c]) for c, file in files.items()}


def _runner(session, tensors: dict[str, torch.Tensor]) -> Callable[[], object]:
    """Feed the session's inputs from ``tensors``, in the dtypes the graph declares."""
    feeds = {
        meta.name: tensors[meta.name].numpy().astype(_NUMPY_TYPES.get(meta.type, np.float32))
        for meta in session.get_inputs()
    }
    return lambda: session.run(None, feeds)
