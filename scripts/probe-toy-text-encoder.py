"""How much of each attribute a U-Net could read from the toy text encoder's token states.

    python scripts/probe-toy-text-encoder.py [--model toy:teacher] [--steps 3000] [--seed 0]

Answers whether the frozen text encoder caps the toy teacher (docs/RESULTS.md, section 2): a
teacher-only retrain keeps it, so it had better carry every attribute. A probe that reads text the
way the U-Net does, one cross-attention layer over all 77 token states (no padding mask, as in
SD), with one learned query per attribute head and a linear classifier on top, is trained on the
captions of random training scenes and scored on

- captions of unseen random scenes (every template and synonym), and
- the fixed eval prompt set (canonical forms, including colour-shape pairs held out of training),

with the same labels the image classifier uses (objects in reading order). It runs twice, on the
last hidden state (what the U-Net sees) and on the input embeddings (the words and their
positions, no context), so the encoder's own contribution shows side by side.
"""

from __future__ import annotations

import argparse
import random

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPTextModel

from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.toy.attributes import IGNORE, batch_labels
from edgefusion.toy.captions import caption, parse
from edgefusion.toy.models import CLASSIFIER_HEADS
from edgefusion.toy.prompts import load_prompts
from edgefusion.toy.tokenizer import load_toy_tokenizer
from edgefusion.toy.world import sample_scene


class CrossAttentionProbe(nn.Module):
    """One learned query per head attends over the token states; a linear layer classifies it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(len(CLASSIFIER_HEADS), width) * width**-0.5)
        self.keys = nn.Linear(width, width)
        self.values = nn.Linear(width, width)
        self.heads = nn.ModuleList(nn.Linear(width, n) for _, n in CLASSIFIER_HEADS)

    def forward(self, states: torch.Tensor) -> list[torch.Tensor]:
        read = F.scaled_dot_product_attention(
            self.queries.expand(states.shape[0], -1, -1), self.keys(states), self.values(states)
        )
        return [head(read[:, i]) for i, head in enumerate(self.heads)]


@torch.no_grad()
def token_states(text_encoder, tokenizer, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Last hidden state and input embeddings of ``prompts``, padded to 77 as the pipeline does."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    out = text_encoder(ids, output_hidden_states=True)
    return {"last hidden state": out.last_hidden_state, "input embeddings": out.hidden_states[0]}


def probe_accuracy(probe: CrossAttentionProbe, states: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict:
    """Accuracy per head over the samples where the head applies, and all heads right at once."""
    with torch.no_grad():
        logits = probe(states)
    all_right = torch.ones(states.shape[0], dtype=torch.bool)
    result = {}
    for (name, _), logit in zip(CLASSIFIER_HEADS, logits, strict=True):
        want = labels[name]
        stated = want != IGNORE
        right = logit.argmax(-1) == want
        result[name] = round(float(right[stated].float().mean()), 3)
        all_right &= right | ~stated
    result["all heads"] = round(float(all_right.float().mean()), 3)
    return result


def train_probe(
    states: torch.Tensor, labels: dict[str, torch.Tensor], steps: int, seed: int
) -> CrossAttentionProbe:
    torch.manual_seed(seed)
    probe = CrossAttentionProbe(states.shape[-1])
    opt = torch.optim.AdamW(probe.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, states.shape[0], (256,), generator=gen)
        logits = probe(states[idx])
        loss = sum(
            F.cross_entropy(logit, labels[name][idx], ignore_index=IGNORE)
            for (name, _), logit in zip(CLASSIFIER_HEADS, logits, strict=True)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return probe


def captioned_scenes(n: int, seed: int) -> tuple[list[str], list]:
    """Captions of random training scenes, with the attributes each caption states (parsed back:
    a caption may leave out a single shape's size or position, which the scene still has)."""
    rng = random.Random(seed)
    prompts = [caption(sample_scene(rng), rng) for _ in range(n)]
    return prompts, [parse(p) for p in prompts]


def split_by_objects(name: str, scenes: list, states: dict[str, torch.Tensor]) -> dict:
    """One prompt set to score, one-shape and two-shape captions apart: (states, labels) each."""
    sets = {}
    for count in (1, 2):
        keep = [i for i, s in enumerate(scenes) if len(s.objects) == count]
        labels = batch_labels([scenes[i] for i in keep])
        sets[f"{name}, {count} object"] = ({k: v[keep] for k, v in states.items()}, labels)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy:teacher")
    parser.add_argument("--train", type=int, default=8000, help="training captions")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    folder = resolve_model_path(args.model)
    tokenizer = load_toy_tokenizer(folder / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32).eval()
    train_prompts, train_scenes = captioned_scenes(args.train, seed=1000 + args.seed)
    train_states, train_labels = (
        token_states(text_encoder, tokenizer, train_prompts),
        batch_labels(train_scenes),
    )
    test_prompts, test_scenes = captioned_scenes(2000, seed=2000 + args.seed)
    eval_prompts = load_prompts("eval")
    eval_scenes = [parse(p) for p in eval_prompts]
    sets = {
        **split_by_objects("train", train_scenes, train_states),
        **split_by_objects(
            "unseen captions", test_scenes, token_states(text_encoder, tokenizer, test_prompts)
        ),
        **split_by_objects("eval prompts", eval_scenes, token_states(text_encoder, tokenizer, eval_prompts)),
    }
    print(f"probe: {args.train} training captions, {args.steps} steps, seed {args.seed}")
    for kind in ("last hidden state", "input embeddings"):
        probe = train_probe(train_states[kind], train_labels, args.steps, args.seed)
        for name, (states, labels) in sets.items():
            print(f"{kind:18s} | {name:26s} | {probe_accuracy(probe, states[kind], labels)}")


if __name__ == "__main__":
    main()
