"""The toy world's personalization subject and its metrics (``edgefusion toy subject ...``).

The subject is one particular star: a yellow star with six points (:data:`SUBJECT_POINTS`; the
5-pointed star's radii and orientation, drawn by the renderer's ``star_points`` option). The
captions, and so every toy model, know only the 5-pointed star: a model that draws six points for
"a sks star" learned them from the instance images (:func:`instance_images`: the star at five
positions and backgrounds, four of them large). It is a subject the toy VAE can carry: trained
on one-colour shapes, it reconstructs a large 6-pointed star in a known colour faithfully (while
any two-colour pattern comes back as a blob). Like every small toy shape, a small one decodes as
a blob, so a small subject cannot be told from a small 5-pointed star.

The identifier ``sks`` needs no new token: the toy tokenizer keeps every byte of CLIP's BPE, and
``sks`` splits into the byte tokens ``s``, ``k``, ``s</w>``, none of which occurs in any caption of
the toy corpus. So its embeddings were never trained, which is what DreamBooth asks of an
identifier (a rare token, with no prior to fight), and every existing caption tokenizes as before.

The metrics are the toy analogues of BK-SDM's DreamBooth evaluation, over images generated for
prompts that put the subject in new contexts (:func:`context_prompts`, the caption grammar with the
identifier where the colour goes: "a large sks star at the left on a blue background"):

- subject fidelity: share of the images generated for the large-size prompts in which the subject
  detector (:mod:`edgefusion.toy.subject_detector`) finds the subject (a yellow 6-pointed star);
  ``subject_fidelity_small`` reports the small-size prompts apart, where the subject is not
  readable (nor is it in renders passed through the toy VAE);
- CLIP-I: mean cosine similarity of each generated image (all sizes) to each instance image in
  the toy CLIP's image space;
- prompt fidelity: background, position and size accuracy of the attribute classifier, and all
  three at once.

Preservation (does the model still draw the ordinary world) is ``edgefusion eval --prompts val``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from edgefusion.atomic import atomic_file, atomic_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.toy.subject_detector import Subject
from edgefusion.toy.world import COLORS, POSITIONS, SIZES, Scene, ShapeObject, render

SUBJECT_SHAPE = "star"
SUBJECT_COLOR = "yellow"
SUBJECT_POINTS = 6
SUBJECT = Subject(SUBJECT_COLOR, SUBJECT_POINTS)
IDENTIFIER = "sks"
INSTANCE_PROMPT = f"a {IDENTIFIER} {SUBJECT_SHAPE}"
CLASS_PROMPT = f"a {SUBJECT_SHAPE}"
#: (size, position, background) of the instance images: every position, mostly large (a small
#: star is a blob to the toy VAE), on backgrounds far from the subject's yellow.
INSTANCE_CONTEXTS = (
    ("large", "center", "blue"),
    ("large", "left", "green"),
    ("large", "right", "purple"),
    ("small", "top", "red"),
    ("large", "bottom", "black"),
)
INSTANCE_SEED = 4242
SUBJECT_FILE = "subject.json"


def subject_scene(size: str, position: str, background: str) -> Scene:
    """The subject as a scene record (what the attribute classifier should read)."""
    return Scene((ShapeObject(SUBJECT_SHAPE, SUBJECT_COLOR, size, position),), background)


def instance_images(size: int = 64) -> list[Image.Image]:
    """The instance images: the subject in each of :data:`INSTANCE_CONTEXTS`, rendered."""
    return [
        render(subject_scene(*context), size, seed=INSTANCE_SEED + i, star_points=SUBJECT_POINTS)
        for i, context in enumerate(INSTANCE_CONTEXTS)
    ]


def subject_caption(size: str, position: str, background: str, identifier: str = IDENTIFIER) -> str:
    """The subject in a context, in the toy caption grammar with the identifier in the colour's
    place ("a large sks star at the left on a blue background"): the instance images' captions
    (every toy training caption names size, position and background) and the context prompts."""
    article = "an" if background[0] in "aeiou" else "a"
    return f"a {size} {identifier} {SUBJECT_SHAPE} at the {position} on {article} {background} background"


def write_instance_images(out: Path, size: int = 64, overwrite: bool = False) -> list[Path]:
    """Write the instance images as PNGs to ``out`` (atomically), each with its caption file
    (``NAME.txt``, which ``edgefusion dreambooth`` trains on), and ``subject.json`` naming the
    prompts and each image's context."""
    if size < 16:
        raise EdgefusionError(f"--size must be at least 16 pixels, got {size}")
    names = [f"{i:02d}-{s}-{p}-{b}.png" for i, (s, p, b) in enumerate(INSTANCE_CONTEXTS)]
    record = {
        "instance_prompt": INSTANCE_PROMPT,
        "class_prompt": CLASS_PROMPT,
        "identifier": IDENTIFIER,
        "subject": {"shape": SUBJECT_SHAPE, "color": SUBJECT_COLOR, "points": SUBJECT_POINTS},
        "images": [
            {"file_name": name, "size": scale, "position": position, "background": background}
            for name, (scale, position, background) in zip(names, INSTANCE_CONTEXTS, strict=True)
        ],
    }
    with atomic_output_dir(out, overwrite) as staging:
        for name, image, context in zip(names, instance_images(size), INSTANCE_CONTEXTS, strict=True):
            image.save(staging / name, format="PNG")
            caption = subject_caption(*context)
            (staging / name).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        (staging / SUBJECT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return [out / name for name in names]


def context_prompts(identifier: str = IDENTIFIER) -> list[tuple[str, Scene]]:
    """Prompts that put the subject in new contexts, with the scene each asks for: every
    background the subject can stand on, at every position, sizes alternating (35 prompts)."""
    backgrounds = [c for c in COLORS if c != SUBJECT_COLOR]
    prompts = []
    for i, background in enumerate(backgrounds):
        for j, position in enumerate(POSITIONS):
            size = SIZES[(i + j) % len(SIZES)]
            text = subject_caption(size, position, background, identifier)
            prompts.append((text, subject_scene(size, position, background)))
    return prompts


def score_subject(
    images: torch.Tensor,
    scenes: list[Scene],
    evaluator: Any,
    detector: torch.nn.Module,
    instances: torch.Tensor,
) -> dict[str, Any]:
    """The subject metrics of ``images`` (in [0, 1]) generated for prompts asking for ``scenes``,
    against the instance images ``instances`` (in [0, 1]). Subject fidelity counts the images of
    large-size scenes, ``subject_fidelity_small`` those of small-size ones (None where there are
    none)."""
    from edgefusion.toy.attributes import score_predictions
    from edgefusion.toy.subject_detector import detected

    rows = score_predictions(scenes, evaluator.predict(images))
    found = detected(detector, images)
    large = torch.tensor([scene.objects[0].size == "large" for scene in scenes])
    generated = F.normalize(evaluator.image_embeddings(images), dim=-1)
    reference = F.normalize(evaluator.image_embeddings(instances), dim=-1)
    context = ("background", "position", "size")
    prompt = {name: _share(rows, name) for name in context}
    prompt["all"] = float(sum(all(row[name] for name in context) for row in rows) / len(rows))
    return {
        "n": len(rows),
        "n_large": int(large.sum()),
        "subject_fidelity": _mean(found[large]),
        "subject_fidelity_small": _mean(found[~large]),
        "clip_i": float((generated @ reference.T).mean()),
        "prompt_fidelity": prompt,
        "star_rate": _share(rows, "shape"),
        "subject_color": _share(rows, "color"),
    }


def _mean(flags: torch.Tensor) -> float | None:
    return float(flags.float().mean()) if len(flags) else None


def _share(rows: list[dict[str, bool]], name: str) -> float:
    return float(sum(row[name] for row in rows) / len(rows))


def evaluate_subject(
    model: str | Path,
    identifier: str = IDENTIFIER,
    n: int = 2,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 35,
    detector: str | Path | None = None,
    sheet: Path | None = None,
) -> dict[str, Any]:
    """Generate ``n`` images per context prompt (image ``k`` with seed ``seed + k``) with the
    sampling defaults of ``edgefusion generate`` and score them with :func:`score_subject`;
    ``sheet``: also write a contact sheet of the first image of each prompt there (PNG)."""
    from edgefusion.pipeline.load import load_pipeline
    from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults
    from edgefusion.toy.metrics import ToyEvaluator
    from edgefusion.toy.samples import images_to_tensor
    from edgefusion.toy.subject_detector import DETECTOR_DIR, load_detector

    if n < 1:
        raise EdgefusionError(f"--n must be at least 1, got {n}")
    if not identifier.strip() or len(identifier.split()) != 1:
        raise EdgefusionError(f"the identifier must be one word, got {identifier!r}")
    pairs = [pair for pair in context_prompts(identifier) for _ in range(n)]
    pipe = load_pipeline(model)
    steps, guidance = sampling_defaults(pipe, model, steps, guidance)
    prompts = [text for text, _ in pairs]
    seeds = [seed + k for k in range(len(prompts))]
    images = generate_tensors(pipe, prompts, seeds, steps, guidance, batch_size)
    evaluator = ToyEvaluator()
    instances = (images_to_tensor(instance_images(evaluator.image_size)) + 1) / 2
    scenes = [scene for _, scene in pairs]
    result = score_subject(images, scenes, evaluator, load_detector(detector or DETECTOR_DIR), instances)
    if sheet is not None:
        write_sheet(sheet, images[::n], prompts[::n])
    result["settings"] = {
        "model": str(model),
        "identifier": identifier,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "n": n,
        "scheduler": type(pipe.scheduler).__name__,
    }
    return result


def write_sheet(path: Path, images: torch.Tensor, captions: list[str]) -> Path:
    """A contact sheet of ``images`` (in [0, 1]) with their captions, written atomically."""
    from edgefusion.demo import contact_sheet
    from edgefusion.toy.samples import tensor_to_images

    with atomic_file(path) as tmp:
        contact_sheet(tensor_to_images(images * 2 - 1), captions, cols=5).save(tmp, format="PNG")
    return Path(path)
