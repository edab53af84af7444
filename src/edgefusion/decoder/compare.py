"""How close a tiny decoder comes to the full one, and how fast it is: ``edgefusion decoder compare``.

Three measurements of a decoder ``--vae`` against the VAE of pipeline ``--model``:

- ``latents``: PSNR of the images both decode from the same latents, those of real images (the
  VAE posterior means of the first images of a dataset, times the scaling factor, as the U-Net
  sees latents), when a dataset is given;
- ``generate``: PSNR of the images the pipeline makes with each decoder for the same prompts and
  seeds (the model's steps and guidance by default: 2 steps for an LCM), end to end through the
  sampling path every command uses, so a wrong latent convention would show here;
- ``seconds``: the median time of one decoder call on one latent at the model's size, each
  decoder, after a warm-up (a check, not a benchmark: ``edgefusion bench`` times components).

PSNR is over all pixels of images in [0, 1] (:func:`edgefusion.quant.quantize.psnr_db`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from edgefusion.errors import EdgefusionError
from edgefusion.limits import check_limit
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import native_size
from edgefusion.pipeline.vae import load_decoder, swap_decoder
from edgefusion.quant.quantize import ReportSettings, images_beside_original, psnr_db
from edgefusion.train.data import encode_images, image_to_tensor, index_samples, read_image

#: Images per encoder or decoder call (a batch of 512 px images is gigabytes of activations).
BATCH = 8


def decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] that ``vae`` decodes from U-Net-scale ``latents``, as the pipelines do."""
    images = []
    with torch.no_grad():
        for chunk in latents.split(BATCH):
            images.append(vae.decode(chunk.to(vae.dtype) / vae.config.scaling_factor).sample.float())
    return (torch.cat(images) / 2 + 0.5).clamp(0, 1)


def dataset_latents(vae: Any, data: str | Path, n: int, resolution: int) -> torch.Tensor:
    """U-Net-scale latents of the first ``n`` decodable images of a dataset (posterior means)."""
    refs, _ = index_samples(data)
    pixels = []
    for ref in refs:
        image = read_image(ref)
        if image is not None:
            pixels.append(image_to_tensor(image, resolution))
        if len(pixels) == n:
            break
    if not pixels:
        raise EdgefusionError(f"no image in {data} can be decoded: check the dataset")
    return torch.cat([encode_images(vae, chunk)[0].float() for chunk in torch.stack(pixels).split(BATCH)])


def decoder_parameters(vae: Any) -> int:
    """Parameters a decode call uses: the decoder and, in an ``AutoencoderKL``, the convolution
    before it."""
    parts = [vae.decoder, getattr(vae, "post_quant_conv", None)]
    return sum(p.numel() for part in parts if part is not None for p in part.parameters())


def decoder_seconds(vae: Any, latents: torch.Tensor, repeats: int = 5) -> float:
    """Median seconds of one ``vae`` decode of ``latents``, after one warm-up call."""
    decode(vae, latents)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode(vae, latents)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_decoders(
    model: str | Path,
    vae: str | Path,
    settings: ReportSettings | None = None,
    data: str | Path | None = None,
    num_latents: int = 64,
) -> dict:
    """The measurements of the module docstring, as one JSON-ready dict."""
    settings = settings or ReportSettings(num_prompts=50)
    check_limit(num_latents, "--latents")
    pipe = load_pipeline(model)
    full = pipe.vae
    tiny = swap_decoder(pipe, load_decoder(vae)).vae
    size = native_size(pipe)
    result: dict[str, Any] = {"model": str(model), "vae": str(vae), "size": size}
    result["params"] = {"full_decoder": decoder_parameters(full), "tiny_decoder": decoder_parameters(tiny)}
    if data is not None:
        latents = dataset_latents(full, data, num_latents, size)
        result["latents"] = {
            "n": len(latents),
            "psnr_db": psnr_db(decode(tiny, latents), decode(full, latents)),
        }
    reference, images, prompts, steps, guidance = images_beside_original(model, pipe, settings)
    described = settings.described(prompts, steps, guidance)
    result["generate"] = {**described, "psnr_db": psnr_db(images, reference)}
    side = size // pipe.vae_scale_factor
    one = torch.randn(1, full.config.latent_channels, side, side, generator=torch.Generator().manual_seed(0))
    seconds = {"full": decoder_seconds(full, one), "tiny": decoder_seconds(tiny, one)}
    result["seconds"] = {**seconds, "speedup": seconds["full"] / seconds["tiny"]}
    return result
