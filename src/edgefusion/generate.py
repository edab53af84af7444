"""Text-to-image generation from any diffusers SD model: ``edgefusion generate``.

LCM-distilled models (EdgeFusion) sample with ``LCMScheduler`` and the guidance scale embedded in
the U-Net (no batch doubling); other models with their scheduler (or DDIM / PNDM / DPM-Solver)
and classifier-free guidance. Image ``k`` (prompt ``k // n``, sample ``k % n``) uses the seed
``seed + k`` on its own generator, so an image does not depend on the batch it was made in: same
seed, same pixels, and an interrupted run resumes where it stopped (finished PNGs are kept; a PNG
made with other settings is an error, not overwritten). Every PNG carries its settings in text
chunks, and ``generations.jsonl`` lists them all.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from edgefusion.errors import EdgefusionError

LOG_FILE = "generations.jsonl"
#: Steps when a caller gives none: SD's 25; EdgeFusion's 2.
DEFAULT_STEPS = {"lcm": 2, "other": 25}
_BACKENDS = ("torch", "onnxruntime")
# The settings that must agree for a PNG already in ``out`` to count as this run's image.
_IDENTITY = ("prompt", "seed", "steps", "guidance", "model", "scheduler", "size", "backend")
# PNG text chunks hold these as written; every other value is JSON (numbers, booleans).
_TEXT_KEYS = frozenset({"file_name", "prompt", "model", "scheduler", "backend"})


def load_generation_pipeline(model: str | Path, backend: str = "torch", scheduler: str | None = None):
    """The pipeline that ``generate`` calls: diffusers in torch, or an ONNX export in onnxruntime."""
    if backend not in _BACKENDS:
        raise EdgefusionError(f"unknown backend {backend!r}; choose one of {', '.join(_BACKENDS)}")
    if backend == "onnxruntime":
        if scheduler is not None:
            raise EdgefusionError("the onnxruntime backend samples with the scheduler saved in the export")
        from edgefusion.export.runtime import load_onnx_pipeline

        return load_onnx_pipeline(model)
    from edgefusion.pipeline.load import load_pipeline, set_scheduler

    pipe = load_pipeline(model)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    return pipe


def default_guidance(pipe: Any, model: str | Path) -> float:
    """The guidance scale the model records for sampling (see :mod:`edgefusion.provenance`), else
    the model kind's: CFG 7.5 (SD's), or diffusers' LCM default 8.5."""
    from edgefusion.provenance import DEFAULT_GUIDANCE, recorded_guidance
    from edgefusion.toy.registry import resolve_model_path

    recorded = recorded_guidance(resolve_model_path(model))
    if recorded is not None:
        return recorded
    return 8.5 if pipeline_is_lcm(pipe) else DEFAULT_GUIDANCE


def sampling_defaults(
    pipe: Any, model: str | Path, steps: int | None, guidance: float | None
) -> tuple[int, float]:
    """``steps`` and ``guidance``, or the model kind's defaults where they are None."""
    if steps is None:
        steps = DEFAULT_STEPS["lcm" if pipeline_is_lcm(pipe) else "other"]
    return steps, guidance if guidance is not None else default_guidance(pipe, model)


def generate(
    prompts: str | Sequence[str],
    model: str | Path = "toy:edgefusion",
    *,
    out: str | Path,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    n: int = 1,
    size: int | None = None,
    scheduler: str | None = None,
    backend: str = "torch",
    batch_size: int = 8,
    progress: bool = True,
    pipe: Any = None,
) -> list[dict[str, Any]]:
    """Generate ``n`` images per prompt into ``out`` (``{k:05d}.png``); return one record per image.

    ``steps`` default to the model kind's (LCM: 2; else 25), ``guidance`` to the scale the model
    records (:mod:`edgefusion.provenance`), else 7.5.
    ``size`` is the image side in pixels (default: the model's). ``pipe`` reuses a loaded pipeline
    of ``model``. Raises :class:`EdgefusionError` for an empty prompt, a size that is not a
    multiple of 8, ``steps < 1`` or ``n < 1``, an unknown model or backend; a prompt longer than
    the text encoder reads is truncated, with a warning.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    _check_request(prompts, steps, n, size, batch_size)
    pipe = pipe if pipe is not None else load_generation_pipeline(model, backend, scheduler)
    lcm = pipeline_is_lcm(pipe)
    steps, guidance = sampling_defaults(pipe, model, steps, guidance)
    size = size or _native_size(pipe)
    warn_truncated(pipe.tokenizer, prompts)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "steps": steps,
        "guidance": guidance,
        "model": str(model),
        "scheduler": type(pipe.scheduler).__name__,
        "size": size,
        "backend": backend,
        "lcm": lcm,
    }
    records = [
        {"file_name": f"{k:05d}.png", "prompt": prompts[k // n], "seed": seed + k, **settings}
        for k in range(len(prompts) * n)
    ]
    made = [_already_made(out / r["file_name"], r) for r in records]
    todo = [r for r, done in zip(records, made, strict=True) if not done]
    _rewrite_log(out, [r for r, done in zip(records, made, strict=True) if done])

    from edgefusion.pipeline.sampling import generate_tensors

    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc="generate", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        images = generate_tensors(
            pipe,
            [r["prompt"] for r in batch],
            [r["seed"] for r in batch],
            steps,
            guidance,
            len(batch),
            size,
            size,
        )
        for record, image in zip(batch, images, strict=True):
            write_png(out / record["file_name"], image, record)
            with (out / LOG_FILE).open("a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
        bar.update(len(batch))
    bar.close()
    return records


def write_png(path: Path, image: torch.Tensor, metadata: dict[str, Any]) -> None:
    """Save an image in [0, 1] (3, H, W) as a PNG with ``metadata`` in text chunks, atomically."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value if key in _TEXT_KEYS else json.dumps(value))
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)


def read_png_metadata(path: Path) -> dict[str, Any]:
    """The settings a PNG written by :func:`write_png` carries (values decoded from JSON)."""
    with Image.open(path) as image:
        text = dict(image.text)
    try:
        return {key: value if key in _TEXT_KEYS else json.loads(value) for key, value in text.items()}
    except json.JSONDecodeError as err:
        raise EdgefusionError(f"{path} carries metadata edgefusion did not write ({err})") from err


def warn_truncated(tokenizer: Any, prompts: Sequence[str]) -> None:
    """Warn, naming the prompt and what is lost, when a prompt exceeds the text encoder's tokens."""
    limit = tokenizer.model_max_length
    for index, prompt in enumerate(prompts):
        ids = tokenizer(prompt, truncation=False).input_ids
        if len(ids) > limit:
            kept = tokenizer.decode(ids[1 : limit - 1])
            warnings.warn(
                f"prompt {index} has {len(ids)} tokens but the text encoder reads {limit}: it is truncated "
                f"to {kept!r}",
                UserWarning,
                stacklevel=3,
            )


def _check_request(prompts: list[str], steps: int | None, n: int, size: int | None, batch_size: int) -> None:
    if not prompts:
        raise EdgefusionError("no prompts given")
    for index, prompt in enumerate(prompts):
        if not prompt.strip():
            raise EdgefusionError(f"prompt {index} is empty: give some text to generate from")
    if steps is not None and steps < 1:
        raise EdgefusionError(f"steps must be at least 1, got {steps}")
    if n < 1 or batch_size < 1:
        raise EdgefusionError("n and batch_size must be at least 1")
    if size is not None and (size < 8 or size % 8):
        raise EdgefusionError(f"size must be a positive multiple of 8 (the VAE's factor), got {size}")


def pipeline_is_lcm(pipe: Any) -> bool:
    """Whether ``pipe`` samples as an LCM (guidance embedded, consistency steps)."""
    if getattr(pipe, "is_lcm", None) is not None:  # an onnxruntime pipeline says so itself
        return bool(pipe.is_lcm)
    from edgefusion.pipeline.load import is_lcm

    return is_lcm(pipe)


def _native_size(pipe: Any) -> int:
    """The image side the model was made for (an onnxruntime pipeline states it as ``default_size``)."""
    if getattr(pipe, "default_size", None):
        return int(pipe.default_size)
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def _already_made(path: Path, record: dict[str, Any]) -> bool:
    """Whether ``path`` is this run's finished image; an image with other settings is an error."""
    if not path.is_file():
        return False
    try:
        found = read_png_metadata(path)
    except OSError as err:
        raise EdgefusionError(f"{path} exists but is not a readable PNG ({err}): move it away") from err
    differs = [key for key in _IDENTITY if found.get(key) != record[key]]
    if differs:
        raise EdgefusionError(
            f"{path} was generated with other settings ({', '.join(differs)} differ): use another --out "
            "folder, or remove the old images"
        )
    return True


def _rewrite_log(out: Path, records: list[dict[str, Any]]) -> None:
    """Start the log from the images already made (a resumed run then appends), atomically."""
    tmp = out / f".{LOG_FILE}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, out / LOG_FILE)
