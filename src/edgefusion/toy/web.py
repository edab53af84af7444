"""The web-scraped variant of the toy world: clean samples with the flaws the EdgeFusion paper fights.

Web image-text pairs (LAION) come with duplicates, small upscaled images, subjects off-centre on
non-square canvases, captions that are alt-text noise or partly wrong, and heavy JPEG compression.
The paper's gains come from curating these away, so this module makes them on purpose and labels
each one in the sample, which lets a curation run be scored exactly.

Every sample is a pure function of ``(seed, index, size, config)``: a duplicate re-derives its
original instead of remembering it, so generation streams in flat memory and a dataset of ``n``
samples is a prefix of one of ``2 n``. A sample that draws no flaw is the clean sample of the same
seed and index, byte for byte.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgefusion.config import config_from_dict, load_config
from edgefusion.errors import EdgefusionError
from edgefusion.toy.captions import ALT_TEXT_NOISE, caption, parse
from edgefusion.toy.world import (
    COLORS,
    HELD_OUT_COMBOS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    Scene,
    render,
    sample_scene,
)

#: Flaw labels, in the order they are listed in a sample's ``flaws``.
FLAWS = (
    "exact_duplicate",
    "near_duplicate",
    "low_resolution",
    "off_center",
    "irrelevant_caption",
    "wrong_caption",
    "jpeg_artifacts",
)

# A near duplicate is resized by one of these factors (never 1) and/or re-encoded at a JPEG quality
# high enough that it shows no artifacts of its own.
_NEAR_DUPLICATE_SCALES = ((0.8, 0.95), (1.05, 1.25))
_REENCODE_QUALITY = (60, 95)
_NOISE_SEPARATORS = (" ", " - ", " | ", ", ")


@dataclass(frozen=True)
class WebFlawConfig:
    """How often each flaw occurs (the fraction of samples that carry it) and how strong it is.

    A sample is an exact duplicate, a near duplicate or an original, so those two rates add up to at
    most 1; likewise its caption is irrelevant, partly wrong or right. Pixel flaws combine freely.
    """

    exact_duplicate: float = 0.08
    near_duplicate: float = 0.08
    low_resolution: float = 0.10
    off_center: float = 0.15
    irrelevant_caption: float = 0.08
    wrong_caption: float = 0.10
    jpeg_artifacts: float = 0.15
    #: Side of a low-resolution render, as a fraction of the target size, before it is upscaled.
    low_resolution_scale: tuple[float, float] = (0.25, 0.45)
    #: JPEG quality range of the ``jpeg_artifacts`` flaw.
    jpeg_quality: tuple[int, int] = (5, 20)

    def __post_init__(self) -> None:
        for name in FLAWS:
            _check_rate(name, getattr(self, name))
        _check_exclusive(self, "exact_duplicate", "near_duplicate")
        _check_exclusive(self, "irrelevant_caption", "wrong_caption")
        lo, hi = _check_pair("low_resolution_scale", self.low_resolution_scale, integers=False)
        if not 0 < lo <= hi < 1:
            raise EdgefusionError(
                f"low_resolution_scale {self.low_resolution_scale} is out of range: "
                "give two fractions with 0 < low <= high < 1"
            )
        q_lo, q_hi = _check_pair("jpeg_quality", self.jpeg_quality, integers=True)
        if not 1 <= q_lo <= q_hi <= 95:
            raise EdgefusionError(
                f"jpeg_quality {self.jpeg_quality} is out of range: "
                "give two integers with 1 <= low <= high <= 95"
            )

    def rates(self) -> dict[str, float]:
        """The configured rate of each flaw, keyed by its label."""
        return {name: getattr(self, name) for name in FLAWS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> WebFlawConfig:
        """Build a config from a JSON/YAML mapping, refusing keys it does not know (likely typos)."""
        return config_from_dict(cls, values, what="web flaw setting")

    @classmethod
    def from_file(cls, path: str | Path) -> WebFlawConfig:
        """Load a config from a YAML or JSON file."""
        return load_config(cls, path, what="web flaw setting")


def _check_rate(name: str, rate: object) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise EdgefusionError(f"the {name} rate must be a number between 0 and 1, got {rate!r}")


def _check_exclusive(config: WebFlawConfig, a: str, b: str) -> None:
    if getattr(config, a) + getattr(config, b) > 1.0:
        raise EdgefusionError(f"the {a} and {b} rates exclude each other, so their sum must be at most 1")


def _check_pair(name: str, pair: object, integers: bool) -> tuple[Any, Any]:
    kind = int if integers else int | float
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(isinstance(v, kind) and not isinstance(v, bool) for v in pair)
    ):
        what = "integers" if integers else "numbers"
        raise EdgefusionError(f"{name} must be a pair of {what} (low, high), got {pair!r}")
    return pair[0], pair[1]


@dataclass
class ToySample:
    """One sample of a toy dataset: the encoded image file and what is known about it.

    ``scene`` is the true content of the pixels (for an off-centre image: of its square part) and
    ``seed`` the render seed, so ``render(scene, size, seed)`` regenerates the clean pixels.
    ``caption_seed`` regenerates the true caption: ``caption(scene, random.Random(caption_seed))``.
    """

    file_name: str
    data: bytes
    text: str
    scene: Scene
    seed: int
    caption_seed: int
    width: int
    height: int
    flaws: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ext(self) -> str:
        return self.file_name.rsplit(".", 1)[1]


def sample_file_name(index: int, ext: str) -> str:
    """The file name of sample ``index``; zero-padded so that names sort in sample order."""
    return f"{index:08d}.{ext}"


def _rng(seed: int, index: int, purpose: str) -> random.Random:
    """An independent random stream per sample and purpose, so one draw never shifts another.

    String seeds are hashed with SHA-512 by ``random``: stable across runs and Python processes.
    """
    return random.Random(f"edgefusion.toy/{purpose}/{seed}/{index}")


def scene_at(seed: int, index: int) -> tuple[Scene, int, int]:
    """Scene, render seed and caption seed of sample ``index``; held-out combinations never occur."""
    rng = _rng(seed, index, "scene")
    scene = sample_scene(rng, allow_held_out=False)
    return scene, rng.randrange(2**31), rng.randrange(2**31)


def encode(image: Image.Image, jpeg_quality: int | None = None) -> tuple[bytes, str]:
    """PNG bytes, or baseline JPEG bytes at ``jpeg_quality``; returns the bytes and the extension."""
    buf = io.BytesIO()
    if jpeg_quality is None:
        image.save(buf, format="PNG", optimize=False)
        return buf.getvalue(), "png"
    image.save(buf, format="JPEG", quality=jpeg_quality)
    return buf.getvalue(), "jpg"


def clean_sample(seed: int, index: int, size: int) -> ToySample:
    """Sample ``index`` of the clean dataset: a square PNG render and a varied, true caption."""
    scene, render_seed, caption_seed = scene_at(seed, index)
    return _sample(index, scene, render_seed, caption_seed, render(scene, size, seed=render_seed))


def _sample(
    index: int,
    scene: Scene,
    render_seed: int,
    caption_seed: int,
    image: Image.Image,
    jpeg_quality: int | None = None,
    flaws: tuple[str, ...] = (),
    details: dict[str, Any] | None = None,
) -> ToySample:
    """Sample ``index`` of ``image`` (encoded as PNG, or JPEG at ``jpeg_quality``) with a true
    caption of ``scene`` and the seeds that make both again."""
    data, ext = encode(image, jpeg_quality)
    return ToySample(
        file_name=sample_file_name(index, ext),
        data=data,
        text=caption(scene, random.Random(caption_seed)),
        scene=scene,
        seed=render_seed,
        caption_seed=caption_seed,
        width=image.width,
        height=image.height,
        flaws=flaws,
        details=details if details is not None else {},
    )


def _ordered_flaws(flaws: set[str]) -> tuple[str, ...]:
    return tuple(f for f in FLAWS if f in flaws)


# --- pixel flaws ---------------------------------------------------------------------------------


def _render_low_resolution(scene: Scene, size: int, seed: int, small: int) -> Image.Image:
    """Render at ``small`` px and upscale to ``size``: the blur of a thumbnail blown up."""
    return render(scene, small, seed=seed).resize((size, size), Image.Resampling.BICUBIC)


def subject_box(image: Image.Image) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1; right and bottom exclusive) of pixels unlike the top-left one.

    The top-left corner is background in every toy render, so this is the box of the subject.
    """
    arr = np.asarray(image.convert("RGB"), dtype=np.int16)
    differs = np.abs(arr - arr[0, 0]).max(axis=2) > 0
    ys, xs = np.nonzero(differs)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The square centre crop that naive preprocessing (and SD training scripts) take."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def box_contains(outer: tuple[int, ...], inner: tuple[int, ...]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _shift(box: tuple[int, int, int, int], dx: int, dy: int) -> tuple[int, int, int, int]:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def end_crop_box(width: int, height: int, end: str) -> tuple[int, int, int, int]:
    """The square crop at the ``start`` (left or top) or ``end`` of an image's long side."""
    side = min(width, height)
    offset = 0 if end == "start" else max(width, height) - side
    return (offset, 0, offset + side, side) if width >= height else (0, offset, side, offset + side)


def _place_off_center(content: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    """Paste square content at one end of a 2:1 or 1:2 canvas of its background colour.

    The end is drawn among those where the centre crop does not hold the whole subject, and one
    always does (the crop shows only the inner half of the content), so every such image is one a
    centre crop damages while the crop at ``crop_box`` keeps it whole.
    """
    side = content.width
    canvas_size = (2 * side, side) if rng.random() < 0.5 else (side, 2 * side)
    center = center_crop_box(*canvas_size)
    subject = subject_box(content)
    placements = []
    for end in ("start", "end"):
        dx, dy = end_crop_box(*canvas_size, end)[:2]
        if not box_contains(center, _shift(subject, dx, dy)):
            placements.append((end, dx, dy))
    end, dx, dy = rng.choice(placements)
    canvas = Image.new("RGB", canvas_size, content.getpixel((0, 0)))
    canvas.paste(content, (dx, dy))
    details = {
        "subject_end": end,
        "crop_box": [dx, dy, dx + side, dy + side],
        "subject_box": list(_shift(subject, dx, dy)),
    }
    return canvas, details


def _original_sample(seed: int, index: int, size: int, config: WebFlawConfig) -> ToySample:
    """Sample ``index`` before duplication and caption flaws: a render with its pixel flaws."""
    scene, render_seed, caption_seed = scene_at(seed, index)
    rng = _rng(seed, index, "pixels")
    low_resolution = rng.random() < config.low_resolution
    off_center = rng.random() < config.off_center
    jpeg = rng.random() < config.jpeg_artifacts
    flaws: set[str] = set()
    details: dict[str, Any] = {}
    if low_resolution:
        small = max(4, round(size * rng.uniform(*config.low_resolution_scale)))
        image = _render_low_resolution(scene, size, render_seed, small)
        flaws.add("low_resolution")
        details["original_size"] = [small, small]
    else:
        image = render(scene, size, seed=render_seed)
    if off_center:
        image, placement = _place_off_center(image, rng)
        flaws.add("off_center")
        details.update(placement)
    quality = None
    if jpeg:
        quality = rng.randint(*config.jpeg_quality)
        flaws.add("jpeg_artifacts")
        details["jpeg_quality"] = quality
    return _sample(index, scene, render_seed, caption_seed, image, quality, _ordered_flaws(flaws), details)


# --- duplicates ----------------------------------------------------------------------------------


def _duplicate_kind(seed: int, index: int, config: WebFlawConfig) -> str | None:
    """Whether sample ``index`` copies an earlier one, and how; sample 0 has nothing to copy."""
    if index == 0:
        return None
    u = _rng(seed, index, "duplicate").random()
    if u < config.exact_duplicate:
        return "exact_duplicate"
    if u < config.exact_duplicate + config.near_duplicate:
        return "near_duplicate"
    return None


def _earlier_original(seed: int, index: int, config: WebFlawConfig, rng: random.Random) -> int:
    """An earlier sample that is not itself a duplicate, so ``duplicate_of`` names an original."""
    if config.exact_duplicate + config.near_duplicate >= 1.0:
        return 0  # every later sample is a duplicate
    candidate = rng.randrange(index)
    while _duplicate_kind(seed, candidate, config) is not None:
        candidate -= 1  # sample 0 is always an original, so this ends
    return candidate


def _resized_placement(placement: dict[str, Any], factor: float, width: int, height: int) -> dict[str, Any]:
    """Off-centre labels of a resized copy: the end crop again, and the subject box grown outwards
    to whole pixels (resampling blurs its edge) but kept inside that crop."""
    crop = end_crop_box(width, height, placement["subject_end"])
    x0, y0, x1, y1 = placement["subject_box"]
    subject = [
        max(crop[0], int(np.floor(x0 * factor))),
        max(crop[1], int(np.floor(y0 * factor))),
        min(crop[2], int(np.ceil(x1 * factor))),
        min(crop[3], int(np.ceil(y1 * factor))),
    ]
    return {"crop_box": list(crop), "subject_box": subject}


def _near_copy(original: ToySample, rng: random.Random) -> tuple[bytes, str, int, int, dict[str, Any]]:
    """Resize the original slightly and/or re-encode it as a good JPEG: same picture, other bytes.

    Resizing keeps the aspect ratio exact (2:1 stays 2:1). A JPEG original stays a JPEG, so its
    (inherited) ``jpeg_artifacts`` label still names the file.
    """
    image = Image.open(io.BytesIO(original.data)).convert("RGB")
    mode = rng.choice(("resize", "reencode", "both"))
    details: dict[str, Any] = {}
    if mode != "reencode":
        scale = rng.uniform(*rng.choice(_NEAR_DUPLICATE_SCALES))
        short = min(image.size)
        factor = max(1, round(short * scale)) / short
        image = image.resize(
            (round(image.width * factor), round(image.height * factor)), Image.Resampling.BICUBIC
        )
        details["resize_scale"] = round(factor, 4)
        if "off_center" in original.flaws:
            details.update(_resized_placement(original.details, factor, image.width, image.height))
    quality = None
    if mode != "resize" or original.ext == "jpg":
        quality = rng.randint(*_REENCODE_QUALITY)
        details["reencode_quality"] = quality
    data, ext = encode(image, quality)
    return data, ext, image.width, image.height, details


def _duplicate_sample(seed: int, index: int, size: int, config: WebFlawConfig, kind: str) -> ToySample:
    """A copy of an earlier original (its pixel flaws included), captioned as is or re-worded."""
    rng = _rng(seed, index, "duplicate-of")
    original = _original_sample(seed, _earlier_original(seed, index, config, rng), size, config)
    details = dict(original.details)
    if kind == "exact_duplicate":
        data, ext, width, height = original.data, original.ext, original.width, original.height
    else:
        data, ext, width, height, changes = _near_copy(original, rng)
        details.update(changes)
    caption_seed = original.caption_seed if rng.random() < 0.5 else rng.randrange(2**31)
    details["duplicate_of"] = original.file_name
    return ToySample(
        file_name=sample_file_name(index, ext),
        data=data,
        text=caption(original.scene, random.Random(caption_seed)),
        scene=original.scene,
        seed=original.seed,
        caption_seed=caption_seed,
        width=width,
        height=height,
        flaws=_ordered_flaws({kind, *original.flaws}),
        details=details,
    )


# --- caption flaws -------------------------------------------------------------------------------


def alt_text_noise(rng: random.Random) -> str:
    """A few alt-text phrases ("stock photo | hd wallpaper") that say nothing about the image."""
    phrases = rng.sample(ALT_TEXT_NOISE, rng.randint(2, 4))
    return rng.choice(_NOISE_SEPARATORS).join(phrases)


def _wrong_choices(scene: Scene, attribute: str, obj: int | None) -> list[Any]:
    """Values ``attribute`` can be swapped to while the scene stays one the world could draw.

    Object colours stay off the background, and no held-out colour-shape pair appears, not even
    in a wrong caption: held-out combinations must stay out of all training text.
    """
    colours_used = {o.color for o in scene.objects}
    if attribute == "background":
        return [c for c in COLORS if c not in colours_used and c != scene.background]
    if attribute == "relation":
        return [r for r in RELATIONS if r != scene.relation]
    target = scene.objects[obj]
    if attribute == "color":
        return [
            c
            for c in COLORS
            if c not in (target.color, scene.background) and (c, target.shape) not in HELD_OUT_COMBOS
        ]
    if attribute == "shape":
        return [s for s in SHAPES if s != target.shape and (target.color, s) not in HELD_OUT_COMBOS]
    return [p for p in POSITIONS if p != target.position]


def _swap(scene: Scene, attribute: str, obj: int | None, value: Any) -> Scene:
    if attribute in ("background", "relation"):
        return replace(scene, **{attribute: value})
    objects = list(scene.objects)
    objects[obj] = replace(objects[obj], **{attribute: value})
    return replace(scene, objects=tuple(objects))


def _stated_attributes(scene: Scene, true_caption: str) -> list[tuple[str, int | None]]:
    """(attribute, object index) pairs the true caption states, so a swap is visible in the text."""
    stated: list[tuple[str, int | None]] = [("background", None)]
    for i in range(len(scene.objects)):
        stated += [("color", i), ("shape", i)]
    if scene.layout == "single":
        parsed = parse(true_caption)
        if parsed is not None and parsed.objects[0].position is not None:
            stated.append(("position", 0))
    else:
        stated.append(("relation", None))
    return stated


def wrong_caption(scene: Scene, caption_seed: int, rng: random.Random) -> tuple[str, str, int | None]:
    """The true caption with one stated attribute swapped; returns (caption, attribute, object).

    The caption is re-made from the same caption seed, so it keeps its template and wording and
    differs in meaning only in the swapped attribute.
    """
    true_caption = caption(scene, random.Random(caption_seed))
    options = [
        (attribute, obj)
        for attribute, obj in _stated_attributes(scene, true_caption)
        if _wrong_choices(scene, attribute, obj)
    ]
    attribute, obj = rng.choice(options)
    wrong = _swap(scene, attribute, obj, rng.choice(_wrong_choices(scene, attribute, obj)))
    return caption(wrong, random.Random(caption_seed)), attribute, obj


def _with_caption_flaw(sample: ToySample, seed: int, index: int, config: WebFlawConfig) -> ToySample:
    """Replace the caption by alt-text noise or a partly wrong one, at the configured rates."""
    rng = _rng(seed, index, "caption")
    u = rng.random()
    if u < config.irrelevant_caption:
        flaw, text, extra = "irrelevant_caption", alt_text_noise(rng), {}
    elif u < config.irrelevant_caption + config.wrong_caption:
        text, attribute, obj = wrong_caption(sample.scene, sample.caption_seed, rng)
        flaw, extra = "wrong_caption", {"wrong_attribute": attribute}
        if len(sample.scene.objects) > 1 and obj is not None:
            extra["wrong_object"] = obj
    else:
        return sample
    details = {**sample.details, "true_caption": sample.text, **extra}
    return replace(sample, text=text, flaws=_ordered_flaws({flaw, *sample.flaws}), details=details)


def web_sample(seed: int, index: int, size: int, config: WebFlawConfig) -> ToySample:
    """Sample ``index`` of the web-scraped dataset of ``seed``, with its flaws and their labels."""
    kind = _duplicate_kind(seed, index, config)
    if kind is None:
        sample = _original_sample(seed, index, size, config)
    else:
        sample = _duplicate_sample(seed, index, size, config, kind)
    return _with_caption_flaw(sample, seed, index, config)


def web_samples(n: int, seed: int, size: int, config: WebFlawConfig | None = None) -> Iterator[ToySample]:
    """The first ``n`` samples of the web-scraped dataset of ``seed``."""
    config = config or WebFlawConfig()
    for index in range(n):
        yield web_sample(seed, index, size, config)
