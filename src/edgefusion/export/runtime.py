"""Generate from an ONNX export in onnxruntime, with the call signature of a diffusers pipeline.

The text encoder, U-Net and VAE decoder run as onnxruntime sessions; the sampling loop is the one
of diffusers' ``StableDiffusionPipeline`` around the scheduler saved in the export, so with the
same seeds an fp32 export reproduces the torch images (to float rounding). LCM U-Nets (those with
a ``timestep_cond`` input) take the embedded guidance ``w = guidance_scale - 1`` and no doubled
batch, as diffusers' ``LatentConsistencyModelPipeline``; the others use classifier-free guidance.

This is the ``onnxruntime`` backend of the inference layer (``load_pipeline(folder,
backend="onnxruntime")``, ``edgefusion generate --backend onnxruntime``): ``edgefusion.export``
registers it when imported. The benchmarks open their sessions with :func:`ort_session` too.
Another runtime reuses the loop by opening the graphs itself: the ``openvino`` backend
(:mod:`~edgefusion.export.openvino`) passes its own ``session`` opener.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from edgefusion.errors import EdgefusionError
from edgefusion.export.layout import EXPORT_INFO, is_openvino_ir
from edgefusion.pipeline.lcm import guidance_embedding, is_lcm

_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def ort_session(file: Path, threads: int | None = None):
    """An onnxruntime CPU session of ``file``; ``threads`` caps its intra-op threads (None: its
    default), and only its errors are logged."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


class OrtSession:
    """One onnxruntime session; inputs cast to what the graph declares, outputs back to fp32 torch."""

    def __init__(self, file: Path, threads: int | None):
        self.session = ort_session(file, threads)
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {
            name: value.numpy().astype(_NUMPY_DTYPES.get(self.input_types[name], np.int64))
            for name, value in inputs.items()
        }
        return torch.from_numpy(self.session.run(None, feed)[0].astype(np.float32))


class OnnxStableDiffusionPipeline:
    """Text-to-image from an export folder written by :func:`~edgefusion.export.onnx.export_pipeline`.

    ``is_lcm`` and ``default_size`` tell ``edgefusion generate`` how to sample and what size to use;
    ``size_factor`` is the step of the sizes the graphs take (exports from before it was recorded:
    the VAE's factor). ``session`` opens one component's graph from its folder (``path / "unet"``)
    as a callable of named torch tensors that returns an fp32 torch tensor, as :class:`OrtSession`
    does, which is the default.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        session: Callable[[Path], Callable[..., torch.Tensor]] | None = None,
    ):
        import diffusers
        from transformers import CLIPTokenizer

        path = Path(path)
        if not (path / EXPORT_INFO).exists():
            raise EdgefusionError(
                f"{path} is not an ONNX export (no {EXPORT_INFO}): run `edgefusion export` first"
            )
        self.info = json.loads((path / EXPORT_INFO).read_text())
        self.tokenizer = CLIPTokenizer.from_pretrained(str(path / "tokenizer"))
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        self.scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
        open_graph = session or (lambda folder: OrtSession(folder / "model.onnx", threads))
        self.text_encoder = open_graph(path / "text_encoder")
        self.unet = open_graph(path / "unet")
        self.vae_decoder = open_graph(path / "vae_decoder")
        self.vae_scale_factor = self.info["vae_scale_factor"]
        self.default_size = self.info["sample_size"][0] * self.vae_scale_factor
        self.size_factor = self.info.get("size_factor", self.vae_scale_factor)
        self.config = SimpleNamespace(**self.info)  # the U-Net's config, as far as sampling needs it
        self.is_lcm = is_lcm(self)

    def set_progress_bar_config(self, **kwargs) -> None:
        """Accepted for parity with diffusers pipelines; this pipeline shows no progress bar."""

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(input_ids=ids)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pt",
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | list[str] | None = None,
    ) -> SimpleNamespace:
        """Images as ``.images``: a float tensor (N, 3, H, W) in [0, 1] for ``output_type="pt"``,
        else a list of PIL images."""
        from diffusers.utils.torch_utils import randn_tensor

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        height, width = height or self.default_size, width or self.default_size
        scale = self.vae_scale_factor
        if height % scale or width % scale:
            raise EdgefusionError(f"height and width must be multiples of {scale}, got {height}x{width}")
        fixed = self.info["sample_size"]
        if not self.info["dynamic_spatial"] and [height // scale, width // scale] != fixed:
            raise EdgefusionError(
                f"this export's tiled U-Net runs at {fixed[0] * scale}x{fixed[1] * scale} only, "
                f"not {height}x{width}"
            )
        batch = len(prompts)
        embeds = self._encode(prompts)
        cfg = not self.is_lcm and guidance_scale > 1.0
        extra = {}
        if cfg:
            negatives = (
                negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * batch
            )
            embeds = torch.cat([self._encode(negatives), embeds])
        if self.is_lcm:
            w = torch.full((batch,), guidance_scale - 1.0)
            extra["timestep_cond"] = guidance_embedding(w, self.info["time_cond_proj_dim"])
        shape = (batch, self.info["latent_channels"], height // scale, width // scale)
        latents = randn_tensor(shape, generator=generator, dtype=torch.float32)
        self.scheduler.set_timesteps(num_inference_steps)
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator)
        for t in self.scheduler.timesteps:
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            timestep = torch.full((model_in.shape[0],), float(t))
            pred = self.unet(sample=model_in, timestep=timestep, encoder_hidden_states=embeds, **extra)
            if cfg:
                uncond, text = pred.chunk(2)
                pred = uncond + guidance_scale * (text - uncond)
            latents = self.scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
        image = self.vae_decoder(latent_sample=latents / self.info["vae_scaling_factor"])
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return SimpleNamespace(images=image)
        if output_type != "pil":
            raise EdgefusionError(f"output_type must be 'pt' or 'pil', got {output_type!r}")
        from diffusers.image_processor import VaeImageProcessor

        return SimpleNamespace(images=VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(image)))

    def _step_kwargs(self, generator) -> dict:
        """``eta`` and ``generator`` for schedulers whose ``step`` takes them, as diffusers passes them."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in accepted:
            kwargs["eta"] = 0.0
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs


def load_onnx_pipeline(path: str | Path, threads: int | None = None) -> OnnxStableDiffusionPipeline:
    """The onnxruntime pipeline of an export folder; ``threads`` caps onnxruntime's intra-op threads."""
    if is_openvino_ir(path):
        raise EdgefusionError(f"{path} is an OpenVINO IR export: run it with --backend openvino")
    return OnnxStableDiffusionPipeline(path, threads)


def load_onnxruntime_backend(path: Path, scheduler: str | None = None, **_) -> OnnxStableDiffusionPipeline:
    """The ``onnxruntime`` backend's loader: an export samples with the scheduler saved in it (a
    dtype asked of it is ignored: the graphs fix theirs)."""
    if scheduler is not None:
        raise EdgefusionError("the onnxruntime backend samples with the scheduler saved in the export")
    return load_onnx_pipeline(path)
