"""Deterministic streams of rendered scenes for training the toy models.

Sample ``i`` of stream ``seed`` is always the same scene, caption and pixels, so a resumed run
sees exactly the batches it would have seen, and two runs with one seed train on the same data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from edgefusion.toy.captions import caption
from edgefusion.toy.world import Scene, render, sample_scene


@dataclass
class SceneBatch:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    captions: list[str]
    scenes: list[Scene]


def sample_at(seed: int, index: int, allow_held_out: bool = False) -> tuple[Scene, str, int]:
    """Scene, caption and render seed of sample ``index`` of stream ``seed``."""
    rng = random.Random(seed * 1_000_003 + index)
    scene = sample_scene(rng, allow_held_out=allow_held_out)
    return scene, caption(scene, rng), rng.randrange(2**31)


def images_to_tensor(images) -> torch.Tensor:
    """PIL images -> float tensor (B, 3, H, W) in [-1, 1], SD's pixel convention."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor):
    """Inverse of :func:`images_to_tensor` (clamps to the valid range)."""
    from PIL import Image

    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def scene_batch(
    seed: int, start: int, batch_size: int, image_size: int = 64, allow_held_out: bool = False
) -> SceneBatch:
    """Samples ``start .. start + batch_size - 1`` of stream ``seed``, rendered."""
    scenes, captions, images = [], [], []
    for i in range(start, start + batch_size):
        scene, text, render_seed = sample_at(seed, i, allow_held_out)
        scenes.append(scene)
        captions.append(text)
        images.append(render(scene, image_size, seed=render_seed))
    return SceneBatch(images_to_tensor(images), captions, scenes)
