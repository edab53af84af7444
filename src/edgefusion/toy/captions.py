"""Caption grammar of the shapes world, and its inverse, :func:`parse`.

Captions vary in template, synonyms and word order, and may leave out the size or position of a
single shape (the image still has one; the caption just does not say). ``parse`` recovers every
attribute a caption states, which is what the toy metrics score generated images against.
"""

from __future__ import annotations

import random
import re

from edgefusion.toy.world import COLORS, Scene, ShapeObject

_SHAPE_WORDS = {
    "circle": ["circle", "disc", "round dot"],
    "square": ["square", "box"],
    "triangle": ["triangle"],
    "star": ["star"],
    "cross": ["cross", "plus sign"],
}
_SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
_POSITION_PHRASES = {
    "left": ["at the left", "on the left", "on the left side"],
    "right": ["at the right", "on the right", "on the right side"],
    "top": ["at the top", "near the top", "at the top edge"],
    "bottom": ["at the bottom", "near the bottom", "at the bottom edge"],
    "center": ["at the center", "in the middle", "in the centre"],
}
_RELATION_PHRASES = {
    "left of": ["left of", "to the left of"],
    "right of": ["right of", "to the right of"],
    "above": ["above", "over"],
    "below": ["below", "under", "beneath"],
}
_BACKGROUND_PHRASES = ["on {ac} background", "against {ac} backdrop", "over {ac} background"]

_SINGLE_TEMPLATES = [
    "{obj} {pos} {bg}",
    "{obj} {bg}",
    "{bg_lead} {obj} {pos}",
    "{bg_lead} {obj}",
    "{obj} {pos}, {bg_plain} background",
    "an image of {obj} {pos} {bg}",
]
_PAIR_TEMPLATES = [
    "{a} {rel} {b} {bg}",
    "{bg_lead} {a} {rel} {b}",
    "{a} {rel} {b}, {bg_plain} background",
    "a picture of {a} {rel} {b} {bg}",
]


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _object_phrase(rng: random.Random, obj: ShapeObject, with_size: bool) -> str:
    shape = rng.choice(_SHAPE_WORDS[obj.shape])
    words = f"{obj.color} {shape}"
    if with_size and obj.size:
        words = f"{rng.choice(_SIZE_WORDS[obj.size])} {words}"
    return _article(words)


def caption(scene: Scene, rng: random.Random) -> str:
    """A varied caption for ``scene``: a random template, synonyms and word order.

    Size and position of a single shape are each left out now and then, so a model learns what
    an unspecified attribute means (anything).
    """
    fields = {
        "bg": rng.choice(_BACKGROUND_PHRASES).format(ac=_article(scene.background)),
        "bg_lead": f"{_article(scene.background)} background with",
        "bg_plain": scene.background,
    }
    if scene.layout == "single":
        obj = scene.objects[0]
        with_size = rng.random() < 0.85
        template = rng.choice(_SINGLE_TEMPLATES)
        fields["obj"] = _object_phrase(rng, obj, with_size)
        fields["pos"] = rng.choice(_POSITION_PHRASES[obj.position])
        return template.format(**fields)
    fields["a"] = _object_phrase(rng, scene.objects[0], with_size=False)
    fields["b"] = _object_phrase(rng, scene.objects[1], with_size=False)
    fields["rel"] = rng.choice(_RELATION_PHRASES[scene.relation])
    return rng.choice(_PAIR_TEMPLATES).format(**fields)


def canonical_caption(scene: Scene, with_position: bool = True) -> str:
    """The canonical forms used by the evaluation prompt set."""
    bg = f"on {_article(scene.background)} background"
    if scene.layout == "single":
        o = scene.objects[0]
        pos = f" at the {o.position}" if with_position else ""
        return f"a {o.size} {o.color} {o.shape}{pos} {bg}"
    a, b = scene.objects
    return f"{_article(f'{a.color} {a.shape}')} {scene.relation} {_article(f'{b.color} {b.shape}')} {bg}"


def _alternation(words) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_COLOR_RE = _alternation(COLORS)
_SHAPE_LOOKUP = {w: s for s, ws in _SHAPE_WORDS.items() for w in ws}
_SIZE_LOOKUP = {w: s for s, ws in _SIZE_WORDS.items() for w in ws}
_RELATION_LOOKUP = {w: r for r, ws in _RELATION_PHRASES.items() for w in ws}
_POSITION_LOOKUP = {w: p for p, ws in _POSITION_PHRASES.items() for w in ws}
_POSITION_LOOKUP.update({f"at the {p}": p for p in _POSITION_PHRASES})

_BACKGROUND_RE = re.compile(rf"\b({_COLOR_RE})\s+(?:background|backdrop)\b")
_OBJECT_RE = re.compile(
    rf"\b(?:({_alternation(_SIZE_LOOKUP)})\s+)?({_COLOR_RE})\s+({_alternation(_SHAPE_LOOKUP)})\b"
)
_RELATION_RE = re.compile(rf"\b({_alternation(_RELATION_LOOKUP)})\b")
_POSITION_RE = re.compile(rf"\b({_alternation(_POSITION_LOOKUP)})\b")


def parse(prompt: str) -> Scene | None:
    """Recover the attributes a caption states; None if it does not describe a shapes scene.

    Attributes the caption leaves out (size, position) are None in the returned scene, and so is
    a background the caption does not name (an empty string marks it).
    """
    text = " ".join(prompt.lower().replace(",", " ").split())
    bg_match = _BACKGROUND_RE.search(text)
    background = bg_match.group(1) if bg_match else ""
    body = _BACKGROUND_RE.sub(" ", text)
    objects = [
        ShapeObject(_SHAPE_LOOKUP[m.group(3)], m.group(2), _SIZE_LOOKUP.get(m.group(1) or ""))
        for m in _OBJECT_RE.finditer(body)
    ]
    if len(objects) == 2:
        # The relation sits between the two object phrases.
        spans = list(_OBJECT_RE.finditer(body))
        between = body[spans[0].end() : spans[1].start()]
        rel = _RELATION_RE.search(between)
        if rel is None:
            return None
        pair = tuple(ShapeObject(o.shape, o.color) for o in objects)
        return Scene(pair, background, _RELATION_LOOKUP[rel.group(1)])
    if len(objects) != 1:
        return None
    pos = _POSITION_RE.search(_OBJECT_RE.sub(" ", body))
    obj = objects[0]
    position = _POSITION_LOOKUP[pos.group(1)] if pos else None
    return Scene((ShapeObject(obj.shape, obj.color, obj.size, position),), background)


# Alt-text-like noise of the web-scraped variant: words that describe nothing in the image.
ALT_TEXT_NOISE = [
    "free download",
    "stock photo",
    "image",
    "jpg",
    "png",
    "wallpaper",
    "hd",
    "best price",
    "buy now",
    "click here",
    "vector illustration",
    "clipart",
    "logo",
    "icon set",
    "sale",
    "new collection",
    "royalty free",
    "untitled",
    "img",
    "photo",
    "design",
    "pattern",
    "banner",
    "background image",
    "abstract art",
    "shop",
    "product",
    "thumbnail",
    "cover",
    "poster",
]


def training_corpus(n: int = 20000, seed: int = 0) -> list[str]:
    """Captions covering every word the grammar (and its alt-text noise) can produce."""
    from edgefusion.toy.world import sample_scene

    rng = random.Random(seed)
    texts = [caption(sample_scene(rng, allow_held_out=True), rng) for _ in range(n)]
    texts += [canonical_caption(sample_scene(rng, allow_held_out=True)) for _ in range(n // 10)]
    return texts + ALT_TEXT_NOISE
