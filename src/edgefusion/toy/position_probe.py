"""Where a toy model's first sampling step puts an object: by the caption, or by the noise?

A sampler commits to the layout at its first, noisiest step. This script looks at that step
alone: for captions that differ only in their position word ("... at the left", "... at the
right", top, bottom), each run on the same starting noises, it decodes the model's guided
estimate of the clean image and measures how the object's mass splits between the two halves
of the named axis (mass: a pixel's distance from the image's border colour, the background).

- ``named_side``: the mean share of the mass on the side the caption names. 1.0: the caption
  decides; 0.5: the caption says nothing about the side.
- ``noise_decides``: how often a caption and its opposite ("left" and "right", same noise) put
  most of the mass on the same side. 0: the caption decides; 1: the noise does.

It needs no sampling loop and no evaluator, so it runs in seconds on a checkpoint.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import sampling_defaults
from edgefusion.toy.world import COLORS, SHAPES
from edgefusion.train.data import encode_text

#: Position word -> (axis of the image tensor it lies on, index of its half along that axis).
SIDES = {"left": (-1, 0), "right": (-1, 1), "top": (-2, 0), "bottom": (-2, 1)}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
TEMPLATE = "a large {color} {shape} at the {position} on a {background} background"


def captions(position: str) -> list[str]:
    """One caption per shape, in colours that stand out from a white or black background."""
    colors = [c for c in COLORS if c not in ("white", "black")]
    return [
        TEMPLATE.format(
            color=colors[i % len(colors)],
            shape=shape,
            position=position,
            background="white" if i % 2 == 0 else "black",
        )
        for i, shape in enumerate(SHAPES)
    ]


@torch.no_grad()
def first_step_images(
    pipe, states: torch.Tensor, noise: torch.Tensor, steps: int, guidance: float
) -> torch.Tensor:
    """The decoded clean-image estimate of the sampler's first step for each caption, all on
    ``noise``; ``states`` are the captions' text states followed by the empty caption's."""
    unet, vae, n = pipe.unet, pipe.vae, states.shape[0] - 1
    pipe.scheduler.set_timesteps(steps)
    t = int(pipe.scheduler.timesteps[0])
    schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    alpha, sigma = schedule.alphas_cumprod[t].sqrt(), (1 - schedule.alphas_cumprod[t]).sqrt()
    latents = noise.expand(n + 1, *noise.shape[1:])
    out = unet(latents, torch.full((n + 1,), t), states).sample
    out = out[-1:] + guidance * (out[:-1] - out[-1:])
    if schedule.config.prediction_type == "v_prediction":
        x0 = alpha * latents[:-1] - sigma * out
    else:
        x0 = (latents[:-1] - sigma * out) / alpha.clamp(min=1e-4)
    return vae.decode(x0 / vae.config.scaling_factor).sample.clamp(-1, 1)


def half_shares(images: torch.Tensor, axis: int) -> torch.Tensor:
    """Share of each image's object mass in the first half along ``axis``."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
    background = border.median(dim=-1).values[..., None, None]
    mass = (images - background).abs().sum(1)  # (n, H, W)
    axis = axis if axis < 0 else axis - 1
    half = mass.shape[axis] // 2
    first = mass.narrow(axis, 0, half).sum((-2, -1))
    return first / (first + mass.narrow(axis, mass.shape[axis] - half, half).sum((-2, -1))).clamp(min=1e-6)


def measure_position_control(model: str, noises: int = 16, seed: int = 0) -> dict:
    """``named_side`` and ``noise_decides`` per position word and on average, for ``model`` at its
    own sampling defaults, over ``noises`` starting noises (seeded)."""
    pipe = load_pipeline(model, "torch")
    steps, guidance = sampling_defaults(pipe, model, None, None)
    channels, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        states = {p: encode_text(pipe.tokenizer, pipe.text_encoder, [*captions(p), ""]) for p in SIDES}
    first_half: dict[str, list[torch.Tensor]] = {p: [] for p in SIDES}
    for _ in range(noises):
        noise = torch.randn(1, channels, size, size, generator=gen)
        for position, (axis, _) in SIDES.items():
            first_half[position].append(
                half_shares(first_step_images(pipe, states[position], noise, steps, guidance), axis)
            )
    result = {"model": model, "steps": steps, "guidance": guidance, "noises": noises, "per_word": {}}
    for position, (_, index) in SIDES.items():
        share = torch.stack(first_half[position])  # (noises, prompts)
        opposite = torch.stack(first_half[OPPOSITE[position]])
        named = share if index == 0 else 1 - share
        same_side = ((share > 0.5) == (opposite > 0.5)).float()
        result["per_word"][position] = {
            "named_side": round(named.mean().item(), 3),
            "noise_decides": round(same_side.mean().item(), 3),
        }
    words = result["per_word"].values()
    result["named_side"] = round(sum(w["named_side"] for w in words) / len(SIDES), 3)
    result["noise_decides"] = round(sum(w["noise_decides"] for w in words) / len(SIDES), 3)
    return result
