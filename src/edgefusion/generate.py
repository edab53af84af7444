"""Text-to-image generation from any diffusers SD model: ``edgefusion generate``.

LCM-distilled models (EdgeFusion) sample with ``LCMScheduler`` and the guidance scale embedded in
the U-Net (no batch doubling); other models with their scheduler (or DDIM / PNDM / DPM-Solver)
and classifier-free guidance. Image ``k`` (prompt ``k // n``, sample ``k % n``) uses the seed
``seed + k`` on its own generator, so an image does not depend on the batch it was made in: same
seed, same pixels, and an interrupted run resumes where it stopped (finished PNGs are kept; a PNG
made with other settings is an error, not overwritten). Every PNG carries its settings in text
chunks, and ``generations.jsonl`` lists them all. A run's records are made on demand and its
images in batches, so memory does not grow with the number of images.

The folder always describes one run: numbered PNGs that this run would not make (an earlier run
had more prompts or a larger ``n``) are refused, and deleted only with ``overwrite``, which also
remakes images generated with other settings; other files in the folder are never touched.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from edgefusion.atomic import make_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.limits import check_guidance, check_image_size, check_seeds
from edgefusion.pipeline import sampling
from edgefusion.pipeline.cpu_backend import AUTO, fastest_cpu_backend, split_backend
from edgefusion.pipeline.lcm import is_lcm
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.registry import get_backend
from edgefusion.pipeline.sampling import (
    check_sampling_memory,
    native_size,
    pipeline_size_factor,
    sampling_defaults,
    warn_truncated,
)
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.pipeline.vae import load_decoder, swap_decoder

LOG_FILE = "generations.jsonl"
# The settings that must agree for a PNG already in ``out`` to count as this run's image.
_IDENTITY = ("prompt", "seed", "steps", "guidance", "model", "scheduler", "size", "backend", "vae")
# PNG text chunks hold these as written; every other value is JSON (numbers, booleans).
_TEXT_KEYS = frozenset({"file_name", "prompt", "model", "scheduler", "backend", "vae"})
# The names generate gives its images: image k is f"{k:05d}.png".
_IMAGE_NAME = re.compile(r"(\d{5,})\.png")


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
    vae: str | Path | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    pipe: Any = None,
) -> GenerationRecords:
    """Generate ``n`` images per prompt into ``out`` (``{k:05d}.png``); return one record per image.

    ``steps`` default to the model kind's (LCM: 2; else 25), ``guidance`` to the scale the model
    records (:mod:`edgefusion.provenance`), else 7.5.
    ``backend`` names a loader with an optional compute type (``torch-bf16``, ``openvino-bf16``),
    or ``auto``, the fastest one measured on this CPU
    (:func:`~edgefusion.pipeline.cpu_backend.fastest_cpu_backend`); records name the one that ran.
    ``size`` is the image side in pixels (default: the model's). ``vae`` decodes with another
    decoder (:func:`edgefusion.pipeline.vae.load_decoder`; records and PNGs then name it). ``pipe``
    reuses a loaded pipeline of ``model`` (with ``vae``, its decoder is swapped in place).
    ``overwrite`` deletes numbered images this run does not make and remakes those made with other
    settings. Raises :class:`EdgefusionError` for an empty prompt, a size that is
    not a positive multiple of the model's size factor or does not fit in memory, ``steps < 1``,
    ``n < 1``, a guidance that is not finite, seeds beyond 64 bits, an unknown model or backend,
    and an ``out`` that holds another run's images; a prompt longer than the text encoder reads is
    truncated, with a warning.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    _check_request(prompts, steps, guidance, seed, n, batch_size)
    if pipe is None:
        pipe, backend = _load_for_generation(model, backend, scheduler, vae)
    elif vae is not None:
        swap_decoder(pipe, load_decoder(vae))
    lcm = is_lcm(pipe)
    steps, guidance = sampling_defaults(pipe, model, steps, guidance)
    size = native_size(pipe) if size is None else check_image_size(size, pipeline_size_factor(pipe))
    check_sampling_memory(pipe, min(batch_size, len(prompts) * n), size, size)
    warn_truncated(pipe.tokenizer, prompts)

    settings = {
        "steps": steps,
        "guidance": guidance,
        "model": str(model),
        "scheduler": type(pipe.scheduler).__name__,
        "size": size,
        "backend": backend,
        "lcm": lcm,
        **({"vae": str(vae)} if vae is not None else {}),
    }
    records = GenerationRecords(prompts, n, seed, settings)
    out = Path(out)
    done = _prepare_folder(out, records, overwrite)
    bar = tqdm(total=len(records), initial=len(done), desc="generate", disable=not progress)
    for batch in _batches_to_make(records, done, batch_size):
        images = sampling.generate_tensors(  # looked up per call: tests replace it
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
            _append_log(out, [record])
        bar.update(len(batch))
    bar.close()
    return records


def _load_for_generation(model: str | Path, backend: str, scheduler: str | None, vae) -> tuple:
    """The pipeline of ``backend`` (a name with an optional compute type, ``openvino-bf16``, or
    ``auto``) decoding with ``vae``, and the name of the backend it runs. OpenVINO exports the
    model with ``vae`` as its decoder graph; the torch backends swap it in after loading."""
    path = resolve_model_path(model)
    if backend == AUTO:
        backend = fastest_cpu_backend(path, scheduler)
    loader, dtype = split_backend(backend)
    if loader == "openvino" and vae is not None:
        return get_backend(loader).load(path, dtype=dtype, scheduler=scheduler, vae=vae), backend
    decoder = load_decoder(vae) if vae is not None else None  # a bad decoder fails before the long load
    pipe = load_pipeline(model, loader, scheduler=scheduler, dtype=dtype)
    if decoder is not None:
        swap_decoder(pipe, decoder)
    return pipe, backend


class GenerationRecords(Sequence):
    """The records of a run, made on demand: image ``k`` is prompt ``k // n`` with seed
    ``seed + k``, so a run of any length holds only its prompts in memory."""

    def __init__(self, prompts: list[str], n: int, seed: int, settings: dict[str, Any]) -> None:
        self.prompts, self.n, self.seed, self.settings = prompts, n, seed, settings

    def __len__(self) -> int:
        return len(self.prompts) * self.n

    @overload
    def __getitem__(self, k: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, k: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        k %= len(self)
        prompt = self.prompts[k // self.n]
        return {"file_name": f"{k:05d}.png", "prompt": prompt, "seed": self.seed + k, **self.settings}


def _batches_to_make(records: GenerationRecords, done: set[int], batch_size: int) -> Iterator[list[dict]]:
    """The records not yet made, in order, ``batch_size`` at a time."""
    batch = []
    for k in range(len(records)):
        if k not in done:
            batch.append(records[k])
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def write_png(path: Path, image: torch.Tensor, metadata: dict[str, Any]) -> None:
    """Save an image in [0, 1] (3, H, W) as a PNG with ``metadata`` in text chunks, atomically."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value if key in _TEXT_KEYS else json.dumps(value))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise EdgefusionError(
            f"cannot write {path} ({err.strerror or err}): free space or choose a writable --out; "
            "finished images are kept and a re-run resumes"
        ) from None


def read_png_metadata(path: Path) -> dict[str, Any]:
    """The settings a PNG written by :func:`write_png` carries (values decoded from JSON)."""
    with Image.open(path) as image:
        text = dict(image.text)
    try:
        return {key: value if key in _TEXT_KEYS else json.loads(value) for key, value in text.items()}
    except json.JSONDecodeError as err:
        raise EdgefusionError(f"{path} carries metadata edgefusion did not write ({err})") from err


def _check_request(
    prompts: list[str], steps: int | None, guidance: float | None, seed: int, n: int, batch_size: int
) -> None:
    """The checks that need no model, done before it loads."""
    if not prompts:
        raise EdgefusionError("no prompts given")
    for index, prompt in enumerate(prompts):
        if not prompt.strip():
            raise EdgefusionError(f"prompt {index} is empty: give some text to generate from")
    if steps is not None and steps < 1:
        raise EdgefusionError(f"steps must be at least 1, got {steps}")
    if n < 1 or batch_size < 1:
        raise EdgefusionError("n and batch_size must be at least 1")
    if guidance is not None:
        check_guidance(guidance)
    check_seeds(seed, len(prompts) * n)


def _prepare_folder(out: Path, records: GenerationRecords, overwrite: bool) -> set[int]:
    """Create ``out`` or check what it holds; return the indices of this run's finished images.

    Numbered PNGs this run does not make are refused (the log would not list them), or deleted
    with ``overwrite``; so are images made with other settings. The log is restarted from the
    finished images (a resumed run appends), so it lists exactly the images in the folder.
    """
    if out.exists() and not out.is_dir():
        raise EdgefusionError(f"--out {out} is a file: give a folder for the images")
    make_output_dir(out)
    numbered = {int(m.group(1)): p for p in out.iterdir() if (m := _IMAGE_NAME.fullmatch(p.name))}
    extra = sorted(k for k in numbered if k >= len(records))
    if extra and not overwrite:
        raise EdgefusionError(
            f"{out} holds {len(extra)} image(s) this run does not make ({numbered[extra[0]].name} and "
            f"up; this run makes {len(records)}), from an earlier run with more prompts or a larger "
            "--n: use another --out, or pass --overwrite to delete them"
        )
    # Every image is checked before anything in the folder changes.
    done = {k for k in numbered if k < len(records) and _already_made(numbered[k], records[k], overwrite)}
    for k in sorted(set(numbered) - done):
        numbered[k].unlink()
    _write_log(out, [records[k] for k in sorted(done)])
    return done


def _already_made(path: Path, record: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``path`` is this run's finished image; one with other settings, or unreadable, is
    an error (False, to be remade, with ``overwrite``)."""
    try:
        found = read_png_metadata(path)
    except (OSError, EdgefusionError) as err:
        if overwrite:
            return False
        raise EdgefusionError(
            f"{path} exists but is not a PNG edgefusion wrote ({err}): move it away, or pass --overwrite"
        ) from err
    differs = [key for key in _IDENTITY if found.get(key) != record.get(key)]
    if differs and not overwrite:
        raise EdgefusionError(
            f"{path} was generated with other settings ({', '.join(differs)} differ): use another --out "
            "folder, or pass --overwrite to remake it"
        )
    return not differs


def _write_log(out: Path, records: list[dict[str, Any]]) -> None:
    """Start the log with ``records`` (those of the images already made), atomically."""
    tmp = out / f".{LOG_FILE}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, out / LOG_FILE)


def _append_log(out: Path, records: list[dict[str, Any]]) -> None:
    with (out / LOG_FILE).open("a", encoding="utf-8") as log:
        log.writelines(json.dumps(r) + "\n" for r in records)
