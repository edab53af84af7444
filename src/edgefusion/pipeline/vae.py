"""Another image decoder for a loaded pipeline: a tiny distilled one, or another VAE.

On a CPU the SD VAE decoder is about two thirds of a 2-step image, so CPU tools replace it with a
tiny decoder in diffusers' ``AutoencoderTiny`` layout (TAESD, or one made by ``edgefusion decoder
distill``). ``--vae DIR`` on every command that samples comes here: :func:`load_decoder` reads the
decoder in ``DIR`` and :func:`swap_decoder` puts it in place of the pipeline's.

The latent convention needs no adapter: diffusers' pipelines decode ``latents /
vae.config.scaling_factor``, and an ``AutoencoderTiny`` has ``scaling_factor`` 1.0, so it is fed
the U-Net's latents as they are (the full VAE's latents times its scaling factor), which is what
TAESD and ``edgefusion decoder distill`` train it on. Its ``latent_magnitude`` and
``latent_shift`` only map latents to bytes (``scale_latents``, for storing them as images);
decoding never uses them.

Swapping works on the pipelines that hold torch modules (the ``torch`` and ``w8a16`` backends);
a backend that runs fixed graphs (``onnxruntime``) refuses it, and an ONNX export takes the
decoder at export time instead (``edgefusion export --vae``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import check_model_folder, first_line, read_json_file
from edgefusion.pipeline.load import cast_
from edgefusion.pipeline.registry import model_source
from edgefusion.pipeline.sources import resolve_model_path

#: The diffusers classes a decoder folder may hold.
DECODER_CLASSES = ("AutoencoderTiny", "AutoencoderKL")
_WEIGHTS_GLOBS = ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")
_BLOCK_OUT_CHANNELS_ECHO = re.compile(
    r"The config attributes \{'block_out_channels': \[[0-9, ]*\]\} were passed to AutoencoderTiny, but"
)


def decoder_folder(spec: str | Path) -> Path:
    """The folder of the decoder ``spec`` names: a decoder folder (``config.json`` and weights,
    as TAESD is published), or the ``vae/`` of a pipeline folder or ``toy:NAME``."""
    if model_source(str(spec)) is None and not Path(spec).expanduser().exists():
        raise EdgefusionError(
            f"--vae {spec} not found: give a decoder folder (config.json and weights, as TAESD is "
            "published) or a pipeline folder with a vae/ subfolder"
        )
    path = resolve_model_path(spec)
    for folder in (path, path / "vae"):
        if (folder / "config.json").is_file():
            return folder
    raise EdgefusionError(
        f"--vae {spec} holds no decoder: neither a config.json (a decoder folder) nor a vae/ "
        "subfolder (a pipeline folder)"
    )


def decoder_class(folder: Path) -> str:
    """The diffusers class named by ``folder``'s config, if it is one a pipeline can decode with."""
    name = read_json_file(folder / "config.json", "decoder config").get("_class_name")
    if name not in DECODER_CLASSES:
        raise EdgefusionError(
            f"{folder / 'config.json'} describes a {name or 'model of no class'}, not a decoder: "
            f"--vae takes an {' or '.join(DECODER_CLASSES)} folder"
        )
    return name


def load_decoder(spec: str | Path) -> Any:
    """The ``AutoencoderTiny`` or ``AutoencoderKL`` in ``spec`` (see :func:`decoder_folder`),
    with its weights, frozen, in evaluation mode."""
    import diffusers

    folder = decoder_folder(spec)
    cls = getattr(diffusers, decoder_class(folder))
    if not any(any(folder.glob(pattern)) for pattern in _WEIGHTS_GLOBS):
        raise EdgefusionError(
            f"decoder folder {folder} holds no weights (diffusion_pytorch_model.safetensors): "
            "point --vae at a trained decoder"
        )
    check_model_folder(folder)
    try:
        with _quiet_config_echo():
            decoder = cls.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise EdgefusionError(
            f"could not load the decoder in {folder}: {first_line(err)}; check that its config.json "
            "matches its weights"
        ) from err
    return decoder.requires_grad_(False).eval()


@contextmanager
def _quiet_config_echo() -> Iterator[None]:
    """Drop diffusers' warning that ``block_out_channels`` "will be ignored" while a decoder loads:
    ``AutoencoderTiny`` records its decoder widths under that name (pipelines compute their scale
    factor from it) but does not take it as an argument, so every folder it was saved to warns."""

    def keep(record: logging.LogRecord) -> bool:
        return not _BLOCK_OUT_CHANNELS_ECHO.match(record.getMessage())

    logger = logging.getLogger("diffusers.configuration_utils")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def decoder_scale_factor(decoder: Any) -> int:
    """Image pixels per latent pixel of ``decoder``: each level but the first upsamples by 2 (by
    ``upsampling_scaling_factor`` in an ``AutoencoderTiny``)."""
    step = getattr(decoder.config, "upsampling_scaling_factor", 2)
    return int(step) ** (len(decoder.config.block_out_channels) - 1)


def swap_decoder(pipe: Any, decoder: Any) -> Any:
    """``pipe`` with ``decoder`` as its VAE, in the dtype and on the device of the VAE it replaces.

    The decoder must read the pipeline's latents (same channels) and upsample them as the old one
    did (same scale factor, which sets the image size). ``pipe`` is changed in place and returned.
    """
    from diffusers import DiffusionPipeline

    if not isinstance(pipe, DiffusionPipeline) or getattr(pipe, "vae", None) is None:
        raise EdgefusionError(
            f"--vae swaps the decoder of a torch pipeline (backends torch and w8a16), not of a "
            f"{type(pipe).__name__}, whose graphs are fixed: export the model with --vae instead"
        )
    old = pipe.vae
    if decoder.config.latent_channels != old.config.latent_channels:
        raise EdgefusionError(
            f"the --vae decoder reads {decoder.config.latent_channels} latent channels, but this "
            f"model's latents have {old.config.latent_channels}: use a decoder made for its VAE"
        )
    if decoder_scale_factor(decoder) != pipe.vae_scale_factor:
        raise EdgefusionError(
            f"the --vae decoder upsamples latents {decoder_scale_factor(decoder)}x, but this model's "
            f"VAE does {pipe.vae_scale_factor}x: use a decoder made for its VAE"
        )
    decoder = cast_(decoder, old.dtype).to(old.device).requires_grad_(False).eval()
    pipe.register_modules(vae=decoder)
    return pipe
