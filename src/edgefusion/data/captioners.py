"""Captioners: ``(list of PIL images) -> list of captions``, loaded once per worker process.

Built in: ``toy`` (the toy evaluator's attribute classifier read back into a canonical caption,
the toy world's stand-in for a captioning model such as Sphinx in the paper) and ``transformers``
(an image-to-text model folder that ``AutoModelForImageTextToText`` loads). Anything else is
``package.module:factory``, where ``factory(model)`` returns such a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from edgefusion.data.config import import_object
from edgefusion.errors import EdgefusionError
from edgefusion.toy.captions import canonical_caption
from edgefusion.toy.world import COLORS, LAYOUTS, POSITIONS, SHAPES, SIZES, Scene, ShapeObject

Captioner = Callable[[list[Image.Image]], list[str]]


def scene_from_predictions(predicted: dict[str, int]) -> Scene:
    """The scene the classifier heads describe; two shapes are stated left/top object first."""
    background = COLORS[predicted["background"]]
    first = ShapeObject(SHAPES[predicted["shape_1"]], COLORS[predicted["color_1"]])
    layout = LAYOUTS[predicted["layout"]]
    if layout == "single":
        obj = ShapeObject(
            first.shape, first.color, SIZES[predicted["size"]], POSITIONS[predicted["position"]]
        )
        return Scene((obj,), background)
    second = ShapeObject(SHAPES[predicted["shape_2"]], COLORS[predicted["color_2"]])
    return Scene((first, second), background, "left of" if layout == "horizontal" else "above")


def images_to_unit_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> float (N, 3, H, W) in [0, 1], the evaluator's input."""
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def toy_captioner(model: str = "toy:evaluator") -> Captioner:
    """Caption toy images with the evaluator's classifier: every attribute it reads, canonically."""
    from edgefusion.toy.metrics import ToyEvaluator

    evaluator = ToyEvaluator(model)

    def caption_images(images: list[Image.Image]) -> list[str]:
        side = evaluator.image_size
        batch = images_to_unit_tensor([im.resize((side, side), Image.Resampling.BICUBIC) for im in images])
        predicted = evaluator.predict(batch)
        rows = [{head: int(values[i]) for head, values in predicted.items()} for i in range(len(images))]
        return [canonical_caption(scene_from_predictions(row)) for row in rows]

    return caption_images


def transformers_captioner(model: str, max_new_tokens: int = 40) -> Captioner:
    """Caption with an image-to-text model folder (BLIP, GIT, ViT-GPT2, ...): its image processor
    makes pixel values, ``generate`` decodes greedily (repeatable), its tokenizer reads the ids."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    try:
        processor = AutoImageProcessor.from_pretrained(model)
        tokenizer = AutoTokenizer.from_pretrained(model)
        network = AutoModelForImageTextToText.from_pretrained(model).eval()
    except (OSError, ValueError) as err:
        raise EdgefusionError(f"cannot load image-to-text model {model}: {err}") from None

    @torch.no_grad()
    def caption_images(images: list[Image.Image]) -> list[str]:
        pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        ids = network.generate(pixel_values=pixels, max_new_tokens=max_new_tokens, do_sample=False)
        return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    return caption_images


@lru_cache(maxsize=4)
def load_captioner(kind: str, model: str) -> Captioner:
    """The captioner ``kind`` with ``model``, built once per process (workers reuse it)."""
    if kind == "toy":
        return toy_captioner(model)
    if kind == "transformers":
        return transformers_captioner(model)
    return import_object(kind, "captioner")(model)
