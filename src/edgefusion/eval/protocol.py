"""The BK-SDM / EdgeFusion COCO protocol: generate for a prompt file, resize, score (IS, FID, KID, CLIP).

BK-SDM generates one 512x512 image per MS-COCO val2014 caption (seed per image), resizes each to
256x256 (PIL bicubic), and reports IS (torch-fidelity), FID against the val2014 statistics at
256 px (pytorch-fid Inception) and the mean image-prompt cosine of open_clip ViT-g-14. We run the
same steps on any model and prompt file; each metric runs when its weights are given, and the toy
world's exact metrics plug in as one more evaluator. Generation resumes: images already in the
folder are kept, and image ``k`` always uses seed ``seed + k``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from tqdm import tqdm

from edgefusion.atomic import make_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.eval.clip import DEFAULT_OPEN_CLIP_ARCH, load_clip
from edgefusion.eval.evaluators import EvaluatorPlugin, evaluator_for, get_evaluator
from edgefusion.eval.fid import feature_statistics, frechet_distance
from edgefusion.eval.inception import load_inception
from edgefusion.eval.metrics import inception_score, kernel_inception_distance
from edgefusion.eval.prompts import image_names, read_prompts
from edgefusion.inputs import IMAGE_EXTENSIONS


@dataclass
class EvalConfig:
    """One evaluation run. ``model`` generates into ``out/images`` unless ``images`` names a folder."""

    prompts: Path
    out: Path
    model: str | None = None
    images: Path | None = None
    steps: int | None = None  # None: the model kind's (25; LCM: 2 steps)
    guidance: float | None = None
    seed: int = 0
    n: int = 1
    size: int | None = None  # generation size; None: the model's own (512 for SD-v1)
    scheduler: str | None = None
    backend: str = "torch"
    vae: str | None = None  # another decoder for generation (edgefusion.pipeline.vae)
    batch_size: int = 8
    resize: int | None = 256  # BK-SDM scores 512 px images resized to 256; None keeps them
    inception_weights: Path | None = None
    fid_reference: Path | None = None  # a statistics .npz or an image folder
    kid: bool = False
    clip: Path | None = None
    clip_arch: str = DEFAULT_OPEN_CLIP_ARCH
    toy: bool | None = None  # None: when the model is a toy-world one (the toy evaluator claims it)
    limit: int | None = None


def generate_images(config: EvalConfig, prompts: list[str], folder: Path) -> None:
    """The generation step; ``edgefusion.generate`` keeps images that exist (resume)."""
    from edgefusion.generate import generate

    generate(
        prompts,
        config.model,
        steps=config.steps,
        guidance=config.guidance,
        seed=config.seed,
        n=config.n,
        size=config.size,
        out=folder,
        scheduler=config.scheduler,
        backend=config.backend,
        vae=config.vae,
        batch_size=config.batch_size,
    )


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise EdgefusionError(f"cannot read image {path} ({err}); delete it and generate it again") from err


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255


def batches(paths: list[Path], size: int, resize: int | None) -> Iterator[tuple[list[Image.Image], list]]:
    """(original images, images resized as the protocol says) per batch, streamed from disk."""
    for i in range(0, len(paths), size):
        images = [load_image(p) for p in paths[i : i + size]]
        resized = [im.resize((resize, resize), Image.BICUBIC) for im in images] if resize else images
        yield images, resized


@torch.no_grad()
def inception_outputs(
    inception: nn.Module, paths: list[Path], batch_size: int, resize: int | None, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """(pool features, logits) of the images at ``paths``, resized first."""
    pools, logits = [], []
    for _, resized in tqdm(batches(paths, batch_size, resize), desc, total=-(-len(paths) // batch_size)):
        pool, logit = inception(to_tensor(resized))
        pools.append(pool.double().numpy())
        logits.append(logit.double().numpy())
    return np.concatenate(pools), np.concatenate(logits)


def folder_images(folder: Path) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if len(paths) < 2:
        raise EdgefusionError(f"{folder} holds {len(paths)} images; a reference needs at least 2")
    return paths


def compute_statistics(
    folder: Path,
    out: Path,
    inception_weights: Path | None,
    resize: int | None = 256,
    batch_size: int = 50,
    keep_features: bool = False,
    inception: nn.Module | None = None,
) -> Path:
    """``edgefusion eval stats``: FID reference statistics (pytorch-fid's ``mu``/``sigma`` .npz) of an
    image folder, resized as the generated images are; ``keep_features`` also stores the features
    that KID needs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgefusionError(f"image folder {folder} not found")
    inception = inception or load_inception(inception_weights)
    features, _ = inception_outputs(inception, folder_images(folder), batch_size, resize, "reference")
    mu, sigma = feature_statistics(features)
    arrays = {"mu": mu, "sigma": sigma} | ({"features": features.astype(np.float32)} if keep_features else {})
    out = Path(out)
    make_output_dir(out.parent)
    staging = out.with_name(f".{out.name}.partial.npz")
    np.savez(staging, **arrays)
    os.replace(staging, out)
    return out


def reference_features(
    reference: Path, inception: nn.Module, config: EvalConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(mu, sigma, features or None) of a statistics file or an image folder."""
    if reference.is_dir():
        features, _ = inception_outputs(
            inception, folder_images(reference), config.batch_size, config.resize, "reference"
        )
        return *feature_statistics(features), features
    if not reference.is_file():
        raise EdgefusionError(
            f"FID reference {reference} not found: pass a statistics .npz or an image folder"
        )
    with np.load(reference) as stats:
        if "mu" not in stats or "sigma" not in stats:
            raise EdgefusionError(
                f"{reference} has no mu/sigma arrays; make one with `edgefusion eval stats`"
            )
        return stats["mu"], stats["sigma"], stats["features"] if "features" in stats else None


def _check_config(config: EvalConfig) -> EvaluatorPlugin | None:
    """Validate before any long work; returns the registered evaluator that runs (``--toy``: the
    toy world's; by default the one that claims the model), if any."""
    if (config.model is None) == (config.images is None):
        raise EdgefusionError("pass either --model (generate, then score) or --images (score a folder)")
    if config.kid and config.fid_reference is None:
        raise EdgefusionError("KID compares with reference images: pass --fid-ref FOLDER_OR_STATS.npz")
    if config.toy is None:
        plugin = evaluator_for(config.model)
    else:
        plugin = get_evaluator("toy") if config.toy else None
    wants_inception = config.inception_weights or config.fid_reference or config.kid
    if not (wants_inception or config.clip or plugin):
        raise EdgefusionError(
            "no evaluator selected: pass --inception-weights pt_inception-2015-12-05-6726825d.pth "
            "(IS; FID/KID with --fid-ref), --clip CLIP_FOLDER_OR_CHECKPOINT, or --toy"
        )
    return plugin


def evaluate(config: EvalConfig, inception: nn.Module | None = None) -> dict:
    """Run the protocol; writes ``metrics.json`` and ``metrics.md`` into ``config.out``.

    ``inception`` replaces the network loaded from ``config.inception_weights`` (tests pass a
    tiny one with the same (features, logits) contract).
    """
    plugin = _check_config(config)
    rows = read_prompts(config.prompts, config.limit)
    if inception is None and (config.inception_weights or config.fid_reference or config.kid):
        inception = load_inception(config.inception_weights)
    clip = load_clip(config.clip, config.clip_arch) if config.clip else None
    exact = None  # the registered evaluator's loaded models
    if plugin is not None:
        plugin.check_prompts([r.text for r in rows for _ in range(config.n)])  # fail before generating
        exact = plugin.load(None)

    out = Path(config.out)
    make_output_dir(out)
    if config.images is None:
        folder = out / "images"
        generate_images(config, [r.text for r in rows], folder)
        names = image_names(rows, config.n)
    else:
        folder = Path(config.images)
        if not folder.is_dir():
            raise EdgefusionError(f"image folder {folder} not found")
        names = image_names(rows, config.n, folder)
    paths = [folder / name for name in names]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise EdgefusionError(
            f"{len(missing)} of {len(paths)} images are missing from {folder} (first: {missing[0].name}); "
            "images are named after the prompt file's file_name column or {index:05d}.png"
        )
    prompts = [rows[k // config.n].text for k in range(len(paths))]

    pools, logits, scores, originals = [], [], [], []
    n_batches = -(-len(paths) // config.batch_size)
    for i, (images, resized) in enumerate(
        tqdm(batches(paths, config.batch_size, config.resize), "scoring", total=n_batches)
    ):
        if inception is not None:
            with torch.no_grad():
                pool, logit = inception(to_tensor(resized))
            pools.append(pool.double().numpy())
            logits.append(logit.double().numpy())
        if clip is not None:
            scores.append(clip.scores(resized, prompts[i * config.batch_size : (i + 1) * config.batch_size]))
        if exact is not None:
            originals.append(to_tensor(images))

    result: dict = {"n_images": len(paths)}
    if inception is not None:
        features = np.concatenate(pools)
        result["is_mean"], result["is_std"] = inception_score(
            np.concatenate(logits), splits=min(10, len(paths))
        )
        if config.fid_reference is not None:
            mu, sigma, ref_features = reference_features(Path(config.fid_reference), inception, config)
            result["fid"] = frechet_distance(*feature_statistics(features), mu, sigma)
            if config.kid:
                if ref_features is None:
                    raise EdgefusionError(
                        f"{config.fid_reference} has no features for KID: remake it with "
                        "`edgefusion eval stats --keep-features`, or pass the reference folder"
                    )
                result["kid_mean"], result["kid_std"] = kernel_inception_distance(features, ref_features)
    if clip is not None:
        result["clip_score"] = float(np.concatenate(scores).mean())
    if exact is not None:
        result[plugin.name] = exact.score(torch.cat(originals), prompts)
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    result["settings"]["images_folder"] = str(folder)
    _write(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    _write(out / "metrics.md", markdown_table(result, plugin))
    return result


def _write(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def markdown_table(result: dict, plugin: EvaluatorPlugin | None = None) -> str:
    """The metrics as a two-column markdown table (the form docs/RESULTS.md uses); ``plugin``'s
    metrics in its own rows."""
    rows = [("images", str(result["n_images"]))]
    if "is_mean" in result:
        rows.append(("IS", f"{result['is_mean']:.2f} ± {result['is_std']:.2f}"))
    if "fid" in result:
        rows.append(("FID", f"{result['fid']:.2f}"))
    if "kid_mean" in result:
        rows.append(("KID", f"{result['kid_mean']:.4f} ± {result['kid_std']:.4f}"))
    if "clip_score" in result:
        rows.append(("CLIP score", f"{result['clip_score']:.4f}"))
    if plugin is not None and plugin.name in result:
        rows += plugin.table_rows(result[plugin.name])
    lines = ["| metric | value |", "|---|---:|", *(f"| {m} | {v} |" for m, v in rows)]
    return "\n".join(lines) + "\n"
