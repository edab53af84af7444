"""Fixtures of the data-curation tests: a small toy web set with exact flaw labels, and a micro
evaluator (random weights) for captioner and scorer logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefusion.toy.dataset import write_toy_dataset


@pytest.fixture(scope="session")
def toy_web(tmp_path_factory) -> Path:
    """120 labelled web-flawed toy samples (duplicates, low resolution, off-centre, bad captions)."""
    return write_toy_dataset(tmp_path_factory.mktemp("web") / "toy-web", "web", n=120, seed=0, progress=False)


@pytest.fixture(scope="session")
def micro_evaluator(tmp_path_factory) -> Path:
    """An evaluator folder in the shipped layout with random micro weights: for pipeline logic only."""
    import torch
    from transformers import CLIPModel

    from edgefusion.toy.models import AttributeClassifier, ToyModelSizes, clip_config
    from edgefusion.toy.tokenizer import load_toy_tokenizer
    from edgefusion.toy.train import save_evaluator

    torch.manual_seed(0)
    sizes = ToyModelSizes(
        text_hidden=16, text_layers=1, text_heads=2, vision_hidden=16, vision_layers=1, vision_patch=16,
        projection_dim=16,
    )  # fmt: skip
    tok = load_toy_tokenizer()
    clip = CLIPModel(clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, sizes))
    folder = tmp_path_factory.mktemp("evaluator") / "micro"
    save_evaluator(AttributeClassifier(width=8, feature_dim=16), clip, folder)
    return folder
