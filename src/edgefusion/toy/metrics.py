"""Toy-world metrics: attribute accuracy, toy CLIP score and FID_toy of images against prompts.

- Attribute accuracy: the shipped classifier reads each image; every attribute the prompt states
  is scored (per attribute, and all-correct), split into one-shape, two-shape and held-out
  colour-shape prompts.
- CLIP score: mean cosine similarity of image and prompt in the toy CLIP (BK-SDM reports the
  same quantity with ViT-g-14).
- FID_toy: Fréchet distance in the classifier's feature space against renders of the same
  prompts (attributes a prompt leaves open are drawn at random, seeded).

The evaluation stages reach these metrics through the evaluator registry
(:mod:`edgefusion.eval.evaluators`), where :mod:`edgefusion.toy.plugins` registers them as
``toy``; ``edgefusion toy eval`` calls them directly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from edgefusion.errors import EdgefusionError
from edgefusion.eval.fid import fid_from_features
from edgefusion.pipeline.cpu_backend import split_backend
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.pipeline.vae import load_decoder, swap_decoder
from edgefusion.toy.attributes import score_predictions
from edgefusion.toy.captions import parse
from edgefusion.toy.models import AttributeClassifier
from edgefusion.toy.samples import images_to_tensor
from edgefusion.toy.tokenizer import load_toy_tokenizer
from edgefusion.toy.world import POSITIONS, SIZES, Scene, ShapeObject, render

_REFERENCE_SEED = 90_000


class ToyEvaluator:
    """The shipped classifier and toy CLIP; images are float tensors in [0, 1], (N, 3, H, W)."""

    def __init__(self, path: str | Path = "toy:evaluator"):
        from transformers import CLIPModel

        folder = resolve_model_path(path)
        config = json.loads((folder / "classifier_config.json").read_text())
        self.classifier = AttributeClassifier(**config)
        self.classifier.load_state_dict(
            {k: v.float() for k, v in load_file(str(folder / "classifier.safetensors")).items()}
        )
        self.classifier.eval()
        self.image_size = config["image_size"]
        self.clip = CLIPModel.from_pretrained(str(folder / "clip"), dtype=torch.float32).eval()
        self.tokenizer = load_toy_tokenizer()

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return images * 2 - 1

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class index per classifier head."""
        logits = [self.classifier(self._prepare(c)) for c in images.split(256)]
        return {h: torch.cat([lg[h] for lg in logits]).argmax(-1) for h in logits[0]}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        return torch.cat([self.classifier.embed(self._prepare(c)) for c in images.split(256)]).numpy()

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """The toy CLIP's image embeddings (projected, not normalized): the space of CLIP-I."""
        parts = []
        for chunk in images.split(256):
            features = self.clip.get_image_features(pixel_values=self._prepare(chunk))
            parts.append(features if torch.is_tensor(features) else features.pooler_output)
        return torch.cat(parts)

    @torch.no_grad()
    def clip_scores(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Cosine similarity of each image with its prompt in the toy CLIP."""
        scores = []
        for i in range(0, len(prompts), 256):
            ids = self.tokenizer(prompts[i : i + 256], padding=True, truncation=True, return_tensors="pt")
            text = self.clip.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask)
            image = self.clip.get_image_features(pixel_values=self._prepare(images[i : i + 256]))
            text, image = (t if torch.is_tensor(t) else t.pooler_output for t in (text, image))
            scores.append(F.cosine_similarity(text, image, dim=-1))
        return torch.cat(scores)

    def score(self, images: torch.Tensor, prompts: list[str]) -> dict:
        """All toy metrics of ``images``: :func:`score_images` with this evaluator."""
        return score_images(images, prompts, self)


def parse_prompts(prompts: list[str]) -> list[Scene]:
    """Scenes of toy prompts; a clear error names the first prompt the grammar cannot read, or that
    names no background (its image, and the reference render, need one)."""
    scenes = []
    for i, p in enumerate(prompts):
        scene = parse(p)
        if scene is None:
            raise EdgefusionError(f"prompt {i + 1} is not a shapes-world prompt: {p!r}")
        if not scene.background:
            raise EdgefusionError(
                f"prompt {i + 1} names no background: {p!r}; shapes-world prompts end 'on a COLOR background'"
            )
        scenes.append(scene)
    return scenes


def check_toy_prompts(prompts: list[str]) -> list[Scene]:
    """The scenes of prompts the toy metrics can score; refuses the others before any image is
    generated: each must parse (:func:`parse_prompts`), and FID_toy compares feature covariances,
    which takes at least 2 images."""
    scenes = parse_prompts(prompts)
    if len(prompts) < 2:
        raise EdgefusionError(
            f"the toy metrics need at least 2 prompts (FID_toy compares covariances), got {len(prompts)}"
        )
    return scenes


def complete_scene(scene: Scene, rng: random.Random) -> Scene:
    """Fill the attributes a prompt leaves open (size, position) at random, for rendering."""
    if scene.layout != "single":
        return scene
    o = scene.objects[0]
    obj = ShapeObject(o.shape, o.color, o.size or rng.choice(SIZES), o.position or rng.choice(POSITIONS))
    return Scene((obj,), scene.background)


def render_prompts(prompts: list[str], seed: int, size: int = 64) -> torch.Tensor:
    """Renders of what each prompt describes, in [0, 1]: the ceiling and the FID reference."""
    rng = random.Random(seed)
    scenes = [complete_scene(s, rng) for s in parse_prompts(prompts)]
    images = [render(s, size, seed=seed * 7 + i) for i, s in enumerate(scenes)]
    return (images_to_tensor(images) + 1) / 2


def _accuracy_table(rows: list[dict[str, bool]]) -> dict:
    if not rows:
        return {"n": 0}
    attributes = sorted({a for r in rows for a in r})
    per = {a: float(np.mean([r[a] for r in rows if a in r])) for a in attributes}
    return {"n": len(rows), "accuracy_all": float(np.mean([all(r.values()) for r in rows])), "accuracy": per}


def score_images(
    images: torch.Tensor, prompts: list[str], evaluator: ToyEvaluator, reference_seed: int = _REFERENCE_SEED
) -> dict:
    """All toy metrics of ``images`` (in [0, 1]) generated for ``prompts``."""
    scenes = check_toy_prompts(prompts)
    rows = score_predictions(scenes, evaluator.predict(images))
    one = [r for r, s in zip(rows, scenes, strict=True) if s.layout == "single"]
    two = [r for r, s in zip(rows, scenes, strict=True) if s.layout != "single"]
    held = [r for r, s in zip(rows, scenes, strict=True) if s.has_held_out_combo()]
    reference = render_prompts(prompts, reference_seed, evaluator.image_size)
    result = _accuracy_table(rows)
    result.update(
        clip_score=float(evaluator.clip_scores(images, prompts).mean()),
        fid=fid_from_features(evaluator.features(images), evaluator.features(reference)),
        one_object=_accuracy_table(one),
        two_object=_accuracy_table(two),
        held_out=_accuracy_table(held),
    )
    return result


def evaluate_toy_model(
    model: str | Path,
    prompts: list[str],
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    batch_size: int = 50,
    evaluator: str | Path = "toy:evaluator",
    backend: str = "torch",
    vae: str | Path | None = None,
) -> dict:
    """Generate one image per prompt (seed ``seed + i``) and score it with :func:`score_images`.

    Generation goes through the pipeline ``edgefusion generate`` uses, with its defaults: an LCM
    model samples with its own scheduler and embedded guidance (2 steps), others 25 steps; the
    guidance is the one the model records (else 7.5). ``vae`` decodes with another decoder
    (:func:`edgefusion.pipeline.vae.load_decoder`).
    """
    if steps is not None and steps < 1:
        raise EdgefusionError(f"steps must be >= 1, got {steps}")
    check_toy_prompts(prompts)  # fail before generating, not after
    decoder = load_decoder(vae) if vae is not None else None
    loader, dtype = split_backend(backend)  # a compute type may be named: openvino-bf16
    pipe = load_pipeline(model, loader, scheduler=scheduler, dtype=dtype)
    if decoder is not None:
        swap_decoder(pipe, decoder)
    steps, guidance = sampling_defaults(pipe, model, steps, guidance)
    seeds = [seed + i for i in range(len(prompts))]
    images = generate_tensors(pipe, prompts, seeds, steps, guidance, batch_size)
    result = score_images(images, prompts, ToyEvaluator(evaluator))
    result["settings"] = {
        "model": str(model),
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "scheduler": type(pipe.scheduler).__name__,
        "backend": backend,
        **({"vae": str(vae)} if vae is not None else {}),
    }
    return result


def is_toy_model(path: str | Path) -> bool:
    """A toy-world model: its tokenizer is the shipped toy one, so toy prompts and metrics apply
    (the shipped ``toy:NAME`` pipelines, everything trained from them, and their exports)."""
    from transformers import CLIPTokenizer

    folder = resolve_model_path(path) / "tokenizer"
    if not folder.is_dir():
        return False
    return CLIPTokenizer.from_pretrained(str(folder)).get_vocab() == load_toy_tokenizer().get_vocab()


def headline(metrics: dict) -> dict[str, float]:
    """The flat toy numbers a report compares: all-correct and per-attribute accuracy, CLIP, FID."""
    flat = {
        "accuracy_all": metrics["accuracy_all"],
        "clip_score": metrics["clip_score"],
        "fid": metrics["fid"],
    }
    flat.update({f"accuracy_{name}": value for name, value in metrics["accuracy"].items()})
    return flat


def table_rows(metrics: dict) -> list[tuple[str, str]]:
    """The toy metrics as ``(metric, value)`` rows of ``metrics.md``."""
    return [
        ("toy attribute accuracy (all correct)", f"{metrics['accuracy_all']:.3f}"),
        *((f"toy accuracy: {a}", f"{v:.3f}") for a, v in metrics["accuracy"].items()),
        ("toy CLIP score", f"{metrics['clip_score']:.4f}"),
        ("toy FID", f"{metrics['fid']:.2f}"),
    ]
