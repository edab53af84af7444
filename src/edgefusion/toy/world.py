"""The shapes world: scenes, their exact attribute records, and an anti-aliased renderer.

A scene is one shape at a named position and size, or two shapes in a spatial relation, on a
coloured background. Everything is deterministic given a seed, so a dataset can be regenerated
bit for bit and every image comes with the exact attributes a caption should describe.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
RELATIONS = ("left of", "right of", "above", "below")
LAYOUTS = ("single", "horizontal", "vertical")

RGB = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}

# (colour, shape) pairs that never appear in the generator's training data (text encoder, VAE,
# U-Net), only in the evaluation prompts: they measure compositional generalisation.
HELD_OUT_COMBOS = frozenset({("purple", "star"), ("orange", "cross"), ("green", "triangle")})

# Geometry as fractions of the image side, so any resolution renders the same scene.
_POSITION_CENTERS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
_RADIUS = {"small": 0.13, "large": 0.22}
_PAIR_RADIUS = 0.15
_PAIR_OFFSET = 0.23  # distance of each object's centre from the image centre
_JITTER = 0.035
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeObject:
    """One shape. ``size`` and ``position`` are None for objects of a two-shape scene."""

    shape: str
    color: str
    size: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class Scene:
    """The exact attribute record of an image.

    ``relation`` relates ``objects[0]`` to ``objects[1]`` ("a red circle left of a blue star").
    """

    objects: tuple[ShapeObject, ...]
    background: str
    relation: str | None = None

    def to_dict(self) -> dict:
        return {
            "objects": [asdict(o) for o in self.objects],
            "background": self.background,
            "relation": self.relation,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(
            objects=tuple(ShapeObject(**o) for o in d["objects"]),
            background=d["background"],
            relation=d.get("relation"),
        )

    @property
    def layout(self) -> str:
        """single, horizontal (left of / right of) or vertical (above / below)."""
        if len(self.objects) == 1:
            return "single"
        return "horizontal" if self.relation in ("left of", "right of") else "vertical"

    def ordered_objects(self) -> tuple[ShapeObject, ...]:
        """Objects in reading order: the left (or top) one first; how the classifier sees them."""
        if self.relation in ("right of", "below"):
            return (self.objects[1], self.objects[0])
        return self.objects

    def has_held_out_combo(self) -> bool:
        return any((o.color, o.shape) in HELD_OUT_COMBOS for o in self.objects)


def _pick_object_color(rng: random.Random, shape: str, background: str, allow_held_out: bool) -> str:
    choices = [c for c in COLORS if c != background and (allow_held_out or (c, shape) not in HELD_OUT_COMBOS)]
    return rng.choice(choices)


def sample_scene(rng: random.Random, p_two_objects: float = 0.4, allow_held_out: bool = False) -> Scene:
    """Draw a random scene; objects never share the background's colour."""
    background = rng.choice(COLORS)
    if rng.random() < p_two_objects:
        objects = []
        for _ in range(2):
            shape = rng.choice(SHAPES)
            objects.append(ShapeObject(shape, _pick_object_color(rng, shape, background, allow_held_out)))
        return Scene(tuple(objects), background, rng.choice(RELATIONS))
    shape = rng.choice(SHAPES)
    color = _pick_object_color(rng, shape, background, allow_held_out)
    obj = ShapeObject(shape, color, rng.choice(SIZES), rng.choice(POSITIONS))
    return Scene((obj,), background)


def _shape_polygon(
    shape: str, cx: float, cy: float, r: float, star_points: int = 5
) -> list[tuple[float, float]] | None:
    """Vertices of a polygonal shape centred at (cx, cy) with circumradius-like extent r; a star
    has ``star_points`` points (inner radius 0.45 r, one point straight up)."""
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        angles = [-90, 30, 150]
        return [(cx + r * np.cos(np.radians(a)), cy + 0.15 * r + r * np.sin(np.radians(a))) for a in angles]
    if shape == "star":
        pts = []
        for k in range(2 * star_points):
            rad = r if k % 2 == 0 else r * 0.45
            a = np.radians(-90 + 180 / star_points * k)
            pts.append((cx + rad * np.cos(a), cy + 0.05 * r + rad * np.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.36
        return [
            (cx - w, cy - r),
            (cx + w, cy - r),
            (cx + w, cy - w),
            (cx + r, cy - w),
            (cx + r, cy + w),
            (cx + w, cy + w),
            (cx + w, cy + r),
            (cx - w, cy + r),
            (cx - w, cy + w),
            (cx - r, cy + w),
            (cx - r, cy - w),
            (cx - w, cy - w),
        ]
    return None


def _draw_shape(
    draw: ImageDraw.ImageDraw, obj: ShapeObject, cx: float, cy: float, r: float, fill, star_points: int = 5
) -> None:
    if obj.shape == "circle":
        draw.ellipse([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=fill)
        return
    poly = _shape_polygon(obj.shape, cx, cy, r, star_points)
    if poly is None:
        raise ValueError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")
    draw.polygon(poly, fill=fill)


def _jittered_color(rng: random.Random, name: str, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.randint(-amount, amount), 0, 255)) for v in RGB[name])


def object_placements(scene: Scene, rng: random.Random) -> list[tuple[ShapeObject, float, float, float]]:
    """(object, cx, cy, radius) in image fractions, with a small seeded jitter."""

    def jit() -> float:
        return rng.uniform(-_JITTER, _JITTER)

    if scene.layout == "single":
        obj = scene.objects[0]
        cx, cy = _POSITION_CENTERS[obj.position or "center"]
        r = _RADIUS[obj.size or "large"] + rng.uniform(-0.015, 0.015)
        return [(obj, cx + jit(), cy + jit(), r)]
    first, second = scene.ordered_objects()
    r = _PAIR_RADIUS + rng.uniform(-0.01, 0.01)
    if scene.layout == "horizontal":
        centers = [(0.5 - _PAIR_OFFSET, 0.5), (0.5 + _PAIR_OFFSET, 0.5)]
    else:
        centers = [(0.5, 0.5 - _PAIR_OFFSET), (0.5, 0.5 + _PAIR_OFFSET)]
    return [(o, cx + jit(), cy + jit(), r) for o, (cx, cy) in zip((first, second), centers, strict=True)]


def render(
    scene: Scene, size: int = 64, seed: int = 0, color_jitter: int = 8, star_points: int = 5
) -> Image.Image:
    """Render a scene as an anti-aliased RGB image (drawn at 4x, then downsampled).

    The seed fixes the positional jitter and the slight colour variation, so the same
    (scene, size, seed) always gives the same pixels. ``star_points`` draws its stars with that
    many points: the captions know only the 5-pointed star, and a 6-pointed one is the toy
    world's personalization subject (:mod:`edgefusion.toy.subject`); it draws no random numbers,
    so everything else in the image stays as with 5.
    """
    if star_points < 3:
        raise ValueError(f"a star needs at least 3 points, got {star_points}")
    rng = random.Random(seed)
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), _jittered_color(rng, scene.background, color_jitter))
    draw = ImageDraw.Draw(img)
    for obj, cx, cy, r in object_placements(scene, rng):
        fill = _jittered_color(rng, obj.color, color_jitter)
        _draw_shape(draw, obj, cx * big, cy * big, r * big, fill, star_points)
    return img.resize((size, size), Image.Resampling.BOX)
