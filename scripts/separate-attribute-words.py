"""Fine-tune a toy text encoder so that captions differing in one attribute word stay apart.

    python scripts/separate-attribute-words.py --model toy:teacher --out runs/sep/pipeline2 \
        --steps 300 --lr 1e-3 --batch 32

The toy text encoder is the text tower of the toy CLIP, whose contrastive training left some word
pairs (left/right, top/bottom, circle/square, triangle/star) with nearly the same states
(scripts/attribute-confusions.py measures them): a U-Net conditioned on those states has almost
nothing to tell the words apart by, and the denoising loss does not teach it to. This script moves
the encoder as little as it can: each caption of the training data is paired with a copy in which
one attribute word is swapped for another of its group (drawn mostly among the pairs that lie
nearest), a hinge loss pushes the pair's states ``--margin`` apart, and an L2 term keeps every
caption's states (and the empty prompt's) near the original encoder's, so that a U-Net trained on
the old states keeps most of what it learned.

The output is a copy of the pipeline folder with the new text encoder (fp32); pass it as
``text_encoder=`` to ``edgefusion train``, which then runs it, frozen, on the cached token ids.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from pathlib import Path

import torch
from transformers import CLIPTextModel, CLIPTokenizer

import edgefusion.toy  # noqa: F401  (registers the toy: model names)
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.toy.world import COLORS, POSITIONS, SHAPES, SIZES
from edgefusion.train.data import tokenize

#: Each group of interchangeable attribute words, and a caption to compare its words in.
WORD_GROUPS = {
    SHAPES: "a large red {} at the left on a blue background",
    COLORS: "a large {} circle at the left on a white background",
    SIZES: "a {} red circle at the left on a blue background",
    POSITIONS: "a large red circle at the {} on a blue background",
    ("above", "below"): "a red circle {} a blue square, white background",
}


def one_word_variants(caption: str) -> list[tuple[str, str, str]]:
    """Every copy of ``caption`` with one attribute word replaced by another of its group, as
    ``(copy, word, replacement)``."""
    words = caption.split(" ")
    variants = []
    for i, token in enumerate(words):
        word = token.strip(",")
        for group in WORD_GROUPS:
            if word in group:
                variants += [
                    (" ".join([*words[:i], token.replace(word, w), *words[i + 1 :]]), word, w)
                    for w in group
                    if w != word
                ]
    return variants


@torch.no_grad()
def word_distances(encoder: CLIPTextModel, tokenizer) -> dict[tuple[str, str], float]:
    """The distance between the states of two captions that differ in one word, for every word pair
    of every group (one caption per group: cheap enough to refresh as the encoder moves)."""
    distances = {}
    for group, template in WORD_GROUPS.items():
        out = states(encoder, tokenize(tokenizer, [template.format(w) for w in group]))
        matrix = torch.cdist(out, out)
        distances |= {(a, b): matrix[i, j].item() for i, a in enumerate(group) for j, b in enumerate(group)}
    return distances


def hard_negatives(
    captions: list[str], distances: dict[tuple[str, str], float], rng: random.Random, temperature: float
) -> list[str]:
    """For each caption, one of its one-word variants, drawn with weight ``exp(-d / temperature)``
    for the distance ``d`` of the two words: the pairs the encoder confuses most are pushed apart
    most often (hard-negative mining by word pair, not by caption, which would cost a forward pass
    of every variant)."""
    chosen = []
    for caption in captions:
        variants = one_word_variants(caption)
        weights = [math.exp(-distances[(a, b)] / temperature) for _, a, b in variants]
        chosen.append(rng.choices(variants, weights)[0][0])
    return chosen


def states(encoder: CLIPTextModel, ids: torch.Tensor) -> torch.Tensor:
    return encoder(ids)[0].flatten(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy:teacher")
    parser.add_argument("--data", type=Path, default=Path("runs/data/toy-teacher"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--margin", type=float, default=30.0)
    parser.add_argument("--keep", type=float, default=1.0, help="weight of the stay-near term")
    parser.add_argument("--temperature", type=float, default=5.0, help="of the hard-negative draw")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = resolve_model_path(args.model)
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    original = CLIPTextModel.from_pretrained(model / "text_encoder").float().eval().requires_grad_(False)
    encoder = CLIPTextModel.from_pretrained(model / "text_encoder").float().train()
    with (args.data / "metadata.jsonl").open(encoding="utf-8") as f:
        captions = [json.loads(line)["text"] for line in f]
    captions = [c for c in captions if one_word_variants(c)]
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=args.lr, weight_decay=0.0)
    empty = tokenize(tokenizer, [""])
    for step in range(1, args.steps + 1):
        batch = rng.sample(captions, args.batch)
        if step % 20 == 1:
            distances = word_distances(encoder.eval(), tokenizer)
            encoder.train()
        negatives = hard_negatives(batch, distances, rng, args.temperature)
        ids = tokenize(tokenizer, batch + negatives + [""])
        new = states(encoder, ids)
        with torch.no_grad():
            old = states(original, ids)
        a, b = new[: args.batch], new[args.batch : 2 * args.batch]
        apart = torch.relu(args.margin - (a - b).norm(dim=1)).pow(2).mean()
        near = (new - old).pow(2).sum(dim=1).mean()
        loss = apart + args.keep * near
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == 1:
            distance = (a - b).norm(dim=1)
            print(
                f"step {step}: apart {apart.item():.2f} near {near.item():.2f} "
                f"pair distance median {distance.median().item():.1f} min {distance.min().item():.1f}",
                flush=True,
            )
    with torch.no_grad():
        drift = (states(encoder.eval(), empty) - states(original, empty)).norm().item()
    print(f"empty-prompt drift {drift:.2f}")
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model, tmp, ignore=shutil.ignore_patterns("text_encoder"))
    encoder.save_pretrained(tmp / "text_encoder")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
