"""The subject detector: the ruler of the toy subject's fidelity (``edgefusion toy subject detector``).

The toy attribute classifier reads shape, colour, size, position and background, but nothing
tells it one star from another: the subject of :mod:`edgefusion.toy.subject` differs from any
yellow star only by its six points. This small CNN reads exactly that: is the object the subject,
a yellow 6-pointed star. Its negatives are everything else: 5-pointed stars of every colour
(yellow ones first among them), 6-pointed stars of other colours (DreamBooth's subject is one
object, its colour included), and the other shapes. It is trained on renders of single shapes
(every colour, position and background), blurred, shifted and noised as VAE-decoded images are,
and it ends in a global pool, so the object counts wherever it is.

Three pools make each batch:

- fresh renders. The subject is rendered large only: every small toy shape decodes as a blob, so
  a small subject is not readable in what a toy model can draw (its images count apart in the
  metrics);
- toy-VAE reconstructions of a fixed pool of renders (encoded and decoded once): a model can only
  draw what its VAE decodes;
- images the base model (``toy:teacher``) generates for prompts of the subject's kind ("a sks
  star", "a star", the context prompts with ``sks`` or a colour in the identifier's place), all
  negatives: it never saw a 6-pointed star, and its odd stars for an unknown word must not count
  as the subject. Their seeds are far from those of ``toy subject eval``, which measures the floor.

Its held-out accuracy is measured on fresh renders and on their reconstructions.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from edgefusion.atomic import atomic_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.toy.registry import WEIGHTS_DIR
from edgefusion.toy.samples import images_to_tensor
from edgefusion.toy.train import augment_like_decoder
from edgefusion.toy.world import COLORS, POSITIONS, SHAPES, SIZES, Scene, ShapeObject, render

#: The shipped detector (weights, config, held-out accuracy), made by the command in its metrics.json.
DETECTOR_DIR = WEIGHTS_DIR / "subject-detector"
WEIGHTS_FILE = "detector.safetensors"
CONFIG_FILE = "detector_config.json"
METRICS_FILE = "metrics.json"
#: Shares of the render stream: the subject, 5-pointed stars (a third of them yellow), 6-pointed
#: stars of other colours; the rest are the other shapes.
_SUBJECT_SHARE = 0.4
_STAR_SHARE = 0.25
_OTHER_POINTS_SHARE = 0.15
_TEST_STREAM_OFFSET = 1_000
_POOL_STREAM_OFFSET = 2_000
#: Seeds of the generated negatives: far from ``toy subject eval``'s (0, 1, ...).
_GENERATED_SEED = 1_000_000


@dataclass(frozen=True)
class Subject:
    """What the detector looks for: a ``color`` star with ``points`` points."""

    color: str
    points: int


class SubjectDetector(nn.Module):
    """Whether the object of a toy image is the subject: one logit per image in [-1, 1].

    The first convolution keeps full resolution (a point of a star is a few pixels wide);
    max and mean pooling over the last map make the answer position-free.
    """

    def __init__(self, width: int = 16, image_size: int = 64) -> None:
        super().__init__()
        self.config = {"width": width, "image_size": image_size}
        w = width
        layers: list[nn.Module] = [nn.Conv2d(3, w, 3, padding=1), nn.SiLU()]
        for c_in, c_out in ((w, w), (w, 2 * w), (2 * w, 2 * w)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * w, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.body(images)
        pooled = torch.cat([maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(1)


def detector_sample(stream: int, index: int, subject: Subject, size: int) -> tuple[torch.Tensor, float]:
    """Render ``index`` of ``stream`` (in [-1, 1]) and its label (1.0: the subject, always large).
    No object takes the background's colour."""
    rng = random.Random(stream * 1_000_003 + index)
    background = rng.choice([c for c in COLORS if c != subject.color])
    draw, points = rng.random(), 5
    if draw < _SUBJECT_SHARE:
        shape, color, scale, points = "star", subject.color, "large", subject.points
    else:
        colors = [c for c in COLORS if c != background]
        scale = rng.choice(SIZES)
        if draw < _SUBJECT_SHARE + _STAR_SHARE:
            shape = "star"
            color = subject.color if rng.random() < 1 / 3 else rng.choice(colors)
        elif draw < _SUBJECT_SHARE + _STAR_SHARE + _OTHER_POINTS_SHARE:
            shape, points = "star", subject.points
            color = rng.choice([c for c in colors if c != subject.color])
        else:
            shape, color = rng.choice([s for s in SHAPES if s != "star"]), rng.choice(colors)
    obj = ShapeObject(shape, color, scale, rng.choice(POSITIONS))
    image = render(Scene((obj,), background), size, seed=rng.randrange(2**31), star_points=points)
    label = shape == "star" and color == subject.color and points == subject.points
    return images_to_tensor([image])[0], float(label)


def detector_batch(
    stream: int, start: int, count: int, subject: Subject, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``start .. start + count - 1`` of ``stream``: images and labels."""
    samples = [detector_sample(stream, i, subject, size) for i in range(start, start + count)]
    return torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])


def generated_prompts(identifier: str, count: int, seed: int) -> list[str]:
    """``count`` prompts of the subject's kind, drawn with ``seed``: "a {identifier} star", "a
    star", and the context grammar's "a {size} {word} star at the {position} on a {background}
    background" with ``word`` the identifier or a colour."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.2:
            prompts.append(f"a {identifier} star")
        elif kind < 0.3:
            prompts.append("a star")
        else:
            word = identifier if kind < 0.7 else rng.choice(COLORS)
            background = rng.choice([c for c in COLORS if c != word])
            article = "an" if background[0] in "aeiou" else "a"
            place = f"at the {rng.choice(POSITIONS)} on {article} {background} background"
            prompts.append(f"a {rng.choice(SIZES)} {word} star {place}")
    return prompts


@torch.no_grad()
def generated_negatives(model: str, identifier: str, count: int, seed: int) -> torch.Tensor:
    """``count`` images (in [-1, 1]) ``model`` generates for :func:`generated_prompts` at its
    sampling defaults, image ``k`` with seed ``_GENERATED_SEED + seed * count + k``."""
    from edgefusion.pipeline.load import load_pipeline
    from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults

    pipe = load_pipeline(model)
    steps, guidance = sampling_defaults(pipe, model, None, None)
    seeds = [_GENERATED_SEED + seed * count + k for k in range(count)]
    images = generate_tensors(pipe, generated_prompts(identifier, count, seed), seeds, steps, guidance)
    side = SubjectDetector().config["image_size"]
    if images.shape[-1] != side:
        images = F.interpolate(images, size=(side, side), mode="bilinear", antialias=True)
    return images * 2 - 1


def train_detector(
    out: Path,
    subject: Subject,
    steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    test_samples: int = 1000,
    vae: str | None = "toy:teacher",
    pool: int = 2000,
    generator: str | None = "toy:teacher",
    generated: int = 400,
    identifier: str = "sks",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a :class:`SubjectDetector` on a seeded stream of renders and write it to ``out``
    (weights, config, ``metrics.json`` with its held-out accuracy), atomically. ``vae``: the
    pipeline whose VAE reconstructions of ``pool`` renders make 3/8 of each batch and a second
    test set; ``generator``: the pipeline whose ``generated`` images for prompts of the subject's
    kind (:func:`generated_prompts` with ``identifier``) make 1/8 of each batch, as negatives
    (None: leave that pool out)."""
    if steps < 1 or batch_size < 8 or test_samples < 1 or pool < 1 or generated < 1:
        raise EdgefusionError(
            "steps, test_samples, pool and generated must be at least 1, batch_size at least 8"
        )
    started = time.time()
    torch.manual_seed(seed)
    model = SubjectDetector()
    size = model.config["image_size"]
    pools = []
    if vae is not None:
        images, labels = detector_batch(seed + _POOL_STREAM_OFFSET, 0, pool, subject, size)
        pools.append((vae_round_trip(vae, images), labels, batch_size * 3 // 8))
    if generator is not None:
        images = generated_negatives(generator, identifier, generated, seed)
        pools.append((images, torch.zeros(len(images)), batch_size // 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        images, labels = _training_batch(seed, step, batch_size, subject, size, pools)
        loss = F.binary_cross_entropy_with_logits(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    metrics = held_out_accuracy(model, subject, seed + _TEST_STREAM_OFFSET, test_samples, vae)
    metrics.update(
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        reconstruction_pool=pool if vae is not None else 0,
        generator=generator,
        generated_negatives=generated if generator is not None else 0,
        train_seconds=round(time.time() - started, 1),
        subject=asdict(subject),
    )
    with atomic_output_dir(out, overwrite) as staging:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE))
        (staging / CONFIG_FILE).write_text(json.dumps(model.config, indent=2) + "\n")
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _training_batch(
    seed: int,
    step: int,
    batch_size: int,
    subject: Subject,
    size: int,
    pools: list[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step``: fresh renders and, from each (images, labels, per-batch count) pool, its
    next slice, all augmented like decoded images."""
    fresh = batch_size - sum(share for _, _, share in pools)
    images, labels = detector_batch(seed, step * fresh, fresh, subject, size)
    for pool_images, pool_labels, share in pools:
        index = (torch.arange(share) + step * share) % len(pool_labels)
        images, labels = torch.cat([images, pool_images[index]]), torch.cat([labels, pool_labels[index]])
    return augment_like_decoder(images, torch.Generator().manual_seed(step)), labels


@torch.no_grad()
def held_out_accuracy(
    model: SubjectDetector, subject: Subject, stream: int, count: int, vae: str | None
) -> dict[str, Any]:
    """Accuracy on ``count`` fresh renders and, with ``vae``, on their VAE reconstructions."""
    images, labels = detector_batch(stream, 0, count, subject, model.config["image_size"])
    result: dict[str, Any] = {"test_samples": count, "subject_share": round(float(labels.mean()), 4)}
    result["accuracy_renders"] = _accuracy(model, images, labels)
    if vae is not None:
        result["accuracy_vae_reconstructions"] = _accuracy(model, vae_round_trip(vae, images), labels)
        result["vae"] = vae
    return result


def _accuracy(model: SubjectDetector, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = torch.cat([model(chunk) > 0 for chunk in images.split(256)]).float()
    return round(float((predicted == labels).float().mean()), 4)


@torch.no_grad()
def vae_round_trip(pipeline: str, images: torch.Tensor) -> torch.Tensor:
    """``images`` (in [-1, 1]) encoded to the posterior mean and decoded by ``pipeline``'s VAE."""
    from diffusers import AutoencoderKL

    from edgefusion.pipeline.sources import resolve_model_path

    vae = AutoencoderKL.from_pretrained(resolve_model_path(pipeline), subfolder="vae").float().eval()
    parts = [vae.decode(vae.encode(c).latent_dist.mean).sample for c in images.split(100)]
    return torch.cat(parts).clamp(-1, 1)


def load_detector(folder: str | Path = DETECTOR_DIR) -> SubjectDetector:
    """A detector written by :func:`train_detector` (default: the shipped one), in eval mode."""
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise EdgefusionError(
            f"{folder} holds no subject detector ({WEIGHTS_FILE}, {CONFIG_FILE}): make one with "
            "`edgefusion toy subject detector --out DIR`"
        )
    model = SubjectDetector(**json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval()


@torch.no_grad()
def detected(model: SubjectDetector, images: torch.Tensor) -> torch.Tensor:
    """Whether each image (in [0, 1], any square size) shows the subject, as booleans."""
    side = model.config["image_size"]
    if images.shape[-1] != side:
        images = F.interpolate(
            images, size=(side, side), mode="bilinear", antialias=True, align_corners=False
        )
    return torch.cat([model(chunk * 2 - 1) > 0 for chunk in images.split(256)])
