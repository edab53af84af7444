"""Which words a toy model confuses, and whether its text encoder tells them apart.

    python scripts/attribute-confusions.py --model runs/teacher/out3 [--prompts val] [--json OUT]

Two measurements side by side, per attribute of a 1-object scene (shape, position, colour, size):

- confusion matrices of the toy evaluator on the model's images for the 1-object prompts that name
  the attribute (25 steps at the model's recorded guidance, seed i for prompt i), and on renders
  of the same prompts (the ceiling: the evaluator itself);
- the distances between the model's text-encoder states (all 77 tokens, flattened) for captions
  that differ only in that word: a frozen encoder that maps two words to nearly the same states
  leaves the U-Net almost nothing to tell them apart by.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.toy.metrics import ToyEvaluator, parse_prompts, render_prompts
from edgefusion.toy.prompts import load_prompts
from edgefusion.toy.world import COLORS, POSITIONS, SHAPES, SIZES
from edgefusion.train.data import encode_text

ATTRIBUTES = {
    "shape": (SHAPES, "a large red {} at the left on a blue background"),
    "position": (POSITIONS, "a large red circle at the {} on a blue background"),
    "color": (COLORS, "a large {} circle at the left on a white background"),
    "size": (SIZES, "a {} red circle at the left on a blue background"),
}
#: The evaluator's classifier head of each attribute (of the first, here only, object).
HEADS = {"shape": "shape_1", "position": "position", "color": "color_1", "size": "size"}


def confusions(images: torch.Tensor, truth: dict[str, list[str]], evaluator: ToyEvaluator) -> dict:
    """``{attribute: {true word: {predicted word: count}}}`` over the prompts naming the attribute."""
    predicted = evaluator.predict(images)
    table: dict[str, dict[str, dict[str, int]]] = {}
    for name, (words, _) in ATTRIBUTES.items():
        pairs = zip(truth[name], predicted[HEADS[name]].tolist(), strict=True)
        counts = Counter((true, words[int(p)]) for true, p in pairs if true)
        table[name] = {t: {p: counts[(t, p)] for p in words} for t in words}
    return table


@torch.no_grad()
def word_distances(model: Path) -> dict[str, list[list[float]]]:
    """L2 distances between the text states of captions that differ in one word."""
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(model / "text_encoder").float().eval()
    distances = {}
    for name, (words, template) in ATTRIBUTES.items():
        states = encode_text(tokenizer, encoder, [template.format(w) for w in words]).flatten(1)
        distances[name] = torch.cdist(states, states).round(decimals=1).tolist()
    return distances


def print_table(title: str, table: dict[str, dict[str, int]]) -> None:
    print(title)
    for true, row in table.items():
        n = sum(row.values())
        print(f"  {true:9s} n={n:3d} right={row[true] / max(n, 1):.2f}  {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a pipeline folder or toy:NAME")
    parser.add_argument("--prompts", default="val", help="a prompt file, or the shipped set val/eval")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    args = parser.parse_args()

    model = resolve_model_path(args.model)
    every = load_prompts(args.prompts)
    prompts = [p for p, scene in zip(every, parse_prompts(every), strict=True) if scene.layout == "single"]
    scenes = parse_prompts(prompts)
    truth = {name: [getattr(s.objects[0], name) for s in scenes] for name in ATTRIBUTES}
    pipe = load_pipeline(str(model), "torch")
    steps, guidance = sampling_defaults(pipe, str(model), None, None)
    images = generate_tensors(pipe, prompts, list(range(len(prompts))), steps, guidance, 50)
    evaluator = ToyEvaluator("toy:evaluator")
    result = {
        "model": str(args.model),
        "prompts": args.prompts,
        "steps": steps,
        "guidance": guidance,
        "model_images": confusions(images, truth, evaluator),
        "renders": confusions(render_prompts(prompts, 0, evaluator.image_size), truth, evaluator),
        "text_state_distances": word_distances(model),
    }
    for source in ("model_images", "renders"):
        for name, table in result[source].items():
            print_table(f"{source}: {name}", table)
    for name, matrix in result["text_state_distances"].items():
        print(f"text-state distances, {name} {ATTRIBUTES[name][0]}")
        for row in matrix:
            print("  ", row)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
