"""CLIP score: mean cosine similarity of each image with its prompt (BK-SDM's protocol, no x100).

BK-SDM scores with open_clip ViT-g-14 (laion2b_s34b_b88k). We load either a transformers CLIP
folder (``config.json`` + tokenizer, optionally ``preprocessor_config.json``) or, when open_clip is
installed, an open_clip checkpoint file of a named architecture. Both come from local paths only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edgefusion.errors import EdgefusionError

#: BK-SDM's CLIP: the architecture an open_clip checkpoint file is read as unless told otherwise.
DEFAULT_OPEN_CLIP_ARCH = "ViT-g-14"


def _features(output) -> torch.Tensor:
    # transformers 5 returns model outputs where 4.x returned tensors.
    return output if torch.is_tensor(output) else output.pooler_output


class TransformersClip:
    """A transformers ``CLIPModel`` folder."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer, CLIPModel

        try:  # transformers 5: the PIL processor needs no torchvision
            from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        except ImportError:
            from transformers import CLIPImageProcessor

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except Exception as err:
            raise EdgefusionError(f"CLIP folder {folder} has no usable tokenizer files ({err})") from err
        self.model = CLIPModel.from_pretrained(str(folder), dtype=torch.float32).eval()
        if (folder / "preprocessor_config.json").exists():
            self.processor = CLIPImageProcessor.from_pretrained(str(folder))
        else:  # CLIP's own preprocessing at the model's input size
            side = self.model.config.vision_config.image_size
            self.processor = CLIPImageProcessor(
                size={"shortest_edge": side}, crop_size={"height": side, "width": side}
            )

    @torch.no_grad()
    def scores(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        pixels = self.processor(images=images, return_tensors="pt").pixel_values
        ids = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        image = _features(self.model.get_image_features(pixel_values=pixels))
        text = _features(
            self.model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask)
        )
        return F.cosine_similarity(image, text, dim=-1).numpy()


class OpenClip:
    """An open_clip checkpoint file (e.g. ViT-g-14 ``open_clip_pytorch_model.bin``)."""

    def __init__(self, checkpoint: Path, arch: str):
        try:
            import open_clip
        except ImportError as err:
            raise EdgefusionError(
                f"{checkpoint} is an open_clip checkpoint, but open_clip is not installed: "
                "`pip install open_clip_torch`, or pass a transformers CLIP folder to --clip"
            ) from err
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(checkpoint)
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)

    @torch.no_grad()
    def scores(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        image = self.model.encode_image(torch.stack([self.preprocess(im) for im in images]))
        text = self.model.encode_text(self.tokenizer(prompts))
        return F.cosine_similarity(image.float(), text.float(), dim=-1).numpy()


def load_clip(path: str | Path, arch: str = DEFAULT_OPEN_CLIP_ARCH) -> TransformersClip | OpenClip:
    """A folder with ``config.json`` is a transformers CLIP; a file is an open_clip checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return TransformersClip(path)
    if path.is_file():
        return OpenClip(path, arch)
    raise EdgefusionError(
        f"CLIP model {path} not found: pass a transformers CLIP folder or an open_clip checkpoint file "
        f"({DEFAULT_OPEN_CLIP_ARCH} laion2b_s34b_b88k for BK-SDM's numbers) to --clip"
    )
