"""Batched, seeded image generation with a diffusers SD pipeline.

Image ``i`` uses its own generator seeded with ``seeds[i]``, so an image does not depend on the
batch it was generated in: resumed or re-batched runs give the same pixels.
"""

from __future__ import annotations

import torch


def generate_tensors(
    pipe,
    prompts: list[str],
    seeds: list[int],
    steps: int,
    guidance: float,
    batch_size: int = 50,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Images in [0, 1], shape (N, 3, H, W), one per (prompt, seed)."""
    if len(prompts) != len(seeds):
        raise ValueError("need one seed per prompt")
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i : i + batch_size]]
        with torch.no_grad():
            images = pipe(
                prompt=prompts[i : i + batch_size],
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=gens,
                output_type="pt",
                height=height,
                width=width,
            ).images
        out.append(images.float().cpu())
    return torch.cat(out)
