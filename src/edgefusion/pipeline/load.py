"""Loading a model for generation: one ``load_pipeline(spec, backend=...)`` for every command.

``spec`` is anything :func:`~edgefusion.pipeline.sources.resolve_model_path` resolves (a folder,
or a registered name such as ``toy:edgefusion``). ``backend`` names a loader in the backend
registry (:mod:`edgefusion.pipeline.registry`): ``torch`` and ``torch-compile`` are built in here; W8A16
(``edgefusion.quant``) and onnxruntime (``edgefusion.export``) register themselves when their
package is imported, and a new runtime is one more module that does the same. Every backend
returns a pipeline with the call signature of a diffusers one, which is all that sampling needs.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import check_model_folder, first_line
from edgefusion.pipeline.lcm import is_lcm
from edgefusion.pipeline.lora import is_lora_folder, load_lora_pipeline
from edgefusion.pipeline.registry import claiming_backend, get_backend, register_backend
from edgefusion.pipeline.sources import resolve_model_path

# Packages whose modules a pipeline folder may name in model_index.json and that we import first,
# so that a plug-in that wrote the folder registers the backend that loads it.
_PLUGIN_PACKAGE = "edgefusion."


def load_pipeline(
    spec: str | Path,
    backend: str = "torch",
    *,
    scheduler: str | None = None,
    dtype: torch.dtype = torch.float32,
):
    """The generation pipeline of ``spec`` in ``backend``, progress bar off, no safety checker.

    ``scheduler`` swaps the sampler (:func:`set_scheduler`; a backend may refuse it). ``dtype`` is
    the torch backend's compute type (fp32 or bf16): weights stored in fp16 (the shipped toy
    models are) load as ``dtype``, because fp16 matmuls are slow or missing on CPUs. A folder that
    another backend claims (a W8A16 folder) loads through that backend, in its own dtype.
    """
    loader = get_backend(backend)
    return loader.load(resolve_model_path(spec), dtype=dtype, scheduler=scheduler)


def _load_torch(path: Path, dtype: torch.dtype = torch.float32, scheduler: str | None = None):
    """The ``torch`` backend: a diffusers pipeline folder, checked first
    (:func:`~edgefusion.inputs.check_model_folder`), so a corrupt file is a one-line error; or a
    LoRA folder, as its base with the adapters fused in (:mod:`edgefusion.pipeline.lora`)."""
    from diffusers import StableDiffusionPipeline

    if is_lora_folder(path):
        return load_lora_pipeline(path, lambda base: _load_torch(resolve_model_path(base), dtype, scheduler))
    if not (path / "model_index.json").exists():
        raise EdgefusionError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    check_model_folder(path)
    _import_declared_plugins(path)
    claimed = claiming_backend(path)
    if claimed is not None:
        return claimed.load(path, dtype=dtype, scheduler=scheduler)
    quiet_progress_bars()
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(path), dtype=dtype, safety_checker=None, requires_safety_checker=False
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise EdgefusionError(
            f"could not load the pipeline in {path}: {first_line(err)}; check that each component's "
            "config matches its weights"
        ) from err
    pipe = as_generation_pipeline(pipe)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    return pipe


register_backend("torch", _load_torch)


def _load_torch_compiled(path: Path, dtype: torch.dtype = torch.float32, scheduler: str | None = None):
    """The ``torch-compile`` backend: the ``torch`` pipeline with its U-Net and VAE decoder
    compiled for the CPU (:func:`cpu_compiled`). Weights load in fp32; ``dtype`` bfloat16 computes
    under bf16 autocast, which keeps normalizations and softmax in fp32 (the ``torch`` backend's
    bf16 casts every weight and op). Compiling happens on the first call at each image size."""
    pipe = _load_torch(path, dtype=torch.float32, scheduler=scheduler)
    for module in (pipe.unet, pipe.vae.decoder):
        module.forward = cpu_compiled(module.forward, dtype)
    return pipe


def cpu_compiled(function, dtype: torch.dtype = torch.float32):
    """``function`` (a module's ``forward``) compiled by inductor for CPU inference under no_grad.

    Freezing folds the weights into the graph as constants (and, under autocast, their casts);
    inductor lays convolutions out channels_last on CPUs by itself. Shapes are static: each new
    image size compiles once more. A ``dtype`` other than float32 computes under its autocast, and
    floating outputs come back as fp32, so latents and images stay fp32 between calls.
    """
    from torch.utils._pytree import tree_map_only

    def run(*args, **kwargs):
        if dtype == torch.float32:
            return function(*args, **kwargs)
        with torch.autocast("cpu", dtype=dtype):
            out = function(*args, **kwargs)
        return tree_map_only(torch.Tensor, lambda t: t.float() if t.is_floating_point() else t, out)

    return torch.compile(run, backend="inductor", dynamic=False, options={"freezing": True})


register_backend("torch-compile", _load_torch_compiled)


def _import_declared_plugins(path: Path) -> None:
    """Import the edgefusion modules ``model_index.json`` names as component classes.

    A folder a plug-in wrote (W8A16) names the plug-in's module as its U-Net's, as diffusers needs
    to load it; importing that module registers the plug-in's backend, so the folder loads even
    when the caller imported nothing but this layer.
    """
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    for entry in index.values():
        if isinstance(entry, list) and entry and str(entry[0]).startswith(_PLUGIN_PACKAGE):
            try:
                importlib.import_module(entry[0])
            except ImportError:
                continue  # diffusers reports the missing class with the folder's name


def quiet_progress_bars() -> None:
    """diffusers' and transformers' per-component loading bars off: commands print their own."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def as_generation_pipeline(pipe):
    """``pipe`` as the pipeline its U-Net samples with, progress bar off.

    A U-Net with a guidance embedding (``time_cond_proj_dim``: an LCM-distilled model) gets a
    ``LatentConsistencyModelPipeline`` with an ``LCMScheduler``: guidance is embedded, the batch is
    not doubled. Any other model stays a ``StableDiffusionPipeline`` with its own scheduler. Both
    take the same call arguments. The LCM pipeline is built from the same components, not with
    ``from_pipe``, which casts every component to float32 (a W8A16 pipeline computes in 16 bits).
    """
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    if is_lcm(pipe):
        pipe = LatentConsistencyModelPipeline(**pipe.components, requires_safety_checker=False)
        if not isinstance(pipe.scheduler, LCMScheduler):
            pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_SCHEDULERS = {
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "lcm": "LCMScheduler",
}


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's sampler for a diffusers scheduler of the same training schedule. An
    LCM model samples with its own scheduler only (its steps are consistency jumps)."""
    import diffusers

    if name not in _SCHEDULERS:
        raise EdgefusionError(f"unknown scheduler {name!r}; choose one of {', '.join(_SCHEDULERS)}")
    if is_lcm(pipe) and name != "lcm":
        raise EdgefusionError(f"this is an LCM model: it samples with the lcm scheduler, not {name}")
    cls = getattr(diffusers, _SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def cast_(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model.to(dtype)`` in place, without diffusers' warning that "there are modules that should
    be kept in float32: []": its ``ModelMixin.to`` prints it on every dtype cast, even when the
    list is empty, as it is for SD's U-Net and VAE. A model that does name such modules is cast by
    diffusers itself, warning included."""
    if getattr(model, "_keep_in_fp32_modules", None):
        return model.to(dtype)
    return torch.nn.Module.to(model, dtype)
