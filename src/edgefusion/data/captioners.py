"""Captioners: ``(list of PIL images) -> list of captions``, loaded once per worker process.

Built in: ``transformers`` (an image-to-text model folder that ``AutoModelForImageTextToText``
loads: BLIP, GIT, ViT-GPT2, ...). A world registers its own in
:data:`edgefusion.data.registry.CAPTIONERS` (the toy world: ``toy``, its stand-in for a captioning
model such as Sphinx in the paper); anything else is ``package.module:factory``, where
``factory(model)`` returns such a callable.
"""

from __future__ import annotations

import torch
from PIL import Image

from edgefusion.data.registry import CAPTIONERS, Captioner
from edgefusion.errors import EdgefusionError


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


CAPTIONERS.register("transformers", transformers_captioner)
