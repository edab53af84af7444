"""Captioning: classifier heads -> canonical caption, the stage keeps the old caption, and the
shipped toy evaluator recaptions the toy web set truthfully."""

from __future__ import annotations

import pytest

from edgefusion.data.caption import CaptionConfig, caption
from edgefusion.data.dataset import iter_rows
from edgefusion.data.ingest import ingest
from edgefusion.data.runner import RunOptions
from edgefusion.toy.attributes import scene_labels
from edgefusion.toy.captions import canonical_caption, parse
from edgefusion.toy.curation import caption_agrees, scene_from_predictions
from edgefusion.toy.scoring import score_captions
from edgefusion.toy.web import scene_at
from edgefusion.toy.world import Scene, ShapeObject

QUIET = RunOptions(progress=False)


def test_predicted_heads_become_the_canonical_caption_of_the_scene():
    for index in range(40):
        scene, _, _ = scene_at(3, index)
        predicted = scene_labels(scene)
        described = scene_from_predictions(predicted)
        assert scene_labels(described) == predicted
        assert caption_agrees(canonical_caption(described), scene.to_dict())
    pair = Scene((ShapeObject("star", "red"), ShapeObject("circle", "blue")), "white", "below")
    assert canonical_caption(scene_from_predictions(scene_labels(pair))) == (
        "a blue circle above a red star on a white background"
    )


def test_caption_agreement_checks_every_stated_attribute():
    record = Scene((ShapeObject("star", "red", "small", "left"),), "blue").to_dict()
    assert caption_agrees("a red star on a blue background", record)
    assert caption_agrees("a small red star at the left on a blue background", record)
    assert not caption_agrees("a large red star on a blue background", record)
    assert not caption_agrees("a red star left of a red star on a blue background", record)
    assert not caption_agrees("stock photo | hd wallpaper", record)


def test_caption_stage_with_a_micro_captioner_keeps_the_original(toy_web, micro_evaluator, tmp_path):
    ingest(toy_web, tmp_path / "in", options=QUIET)
    config = CaptionConfig(model=str(micro_evaluator), batch_size=16)
    stats = caption(tmp_path / "in", tmp_path / "out", config, RunOptions(chunk_size=50, progress=False))
    before = {r["id"]: r["text"] for r in iter_rows(tmp_path / "in")}
    rows = list(iter_rows(tmp_path / "out"))
    assert stats["kept"] == len(rows) == 120
    for row in rows:
        assert row["original_text"] == before[row["id"]]
        assert parse(row["text"]) is not None and row["captioner"] == "toy"


def test_shipped_evaluator_recaptions_truthfully(toy_web, tmp_path):
    """End to end with the shipped toy evaluator: recaptioned square images state true attributes."""
    ingest(toy_web, tmp_path / "in", options=QUIET)
    caption(tmp_path / "in", tmp_path / "out", CaptionConfig(), QUIET)
    square = [r for r in iter_rows(tmp_path / "out") if r["width"] == r["height"] == 64]
    assert len(square) > 60
    agreement = sum(caption_agrees(r["text"], r["record"]) for r in square) / len(square)
    before = sum(caption_agrees(r["original_text"], r["record"]) for r in square) / len(square)
    assert agreement >= 0.9 > before
    assert score_captions(tmp_path / "out")["agreement_before"] == pytest.approx(
        sum(caption_agrees(r["original_text"], r["record"]) for r in iter_rows(tmp_path / "out")) / 120,
        abs=1e-4,
    )


def _micro_image_to_text(folder):
    """A random ViT encoder + GPT-2 decoder folder, loadable like any image-to-text checkpoint."""
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    from edgefusion.toy.tokenizer import load_toy_tokenizer

    torch.manual_seed(0)
    tok = load_toy_tokenizer()
    encoder = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=16,
    )
    decoder = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=16,
        n_layer=1,
        n_head=2,
        add_cross_attention=True,
        is_decoder=True,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    model = VisionEncoderDecoderModel(config)
    model.config.decoder_start_token_id = tok.bos_token_id
    model.config.pad_token_id = tok.eos_token_id
    generation = model.generation_config
    generation.decoder_start_token_id, generation.pad_token_id, generation.eos_token_id = (
        tok.bos_token_id, tok.eos_token_id, tok.eos_token_id,
    )  # fmt: skip
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_transformers_image_to_text_captioner(toy_web, tmp_path):
    model = _micro_image_to_text(tmp_path / "i2t")
    ingest(toy_web, tmp_path / "in", options=QUIET)
    config = CaptionConfig(captioner="transformers", model=str(model), batch_size=32)
    caption(tmp_path / "in", tmp_path / "a", config, RunOptions(chunk_size=60, progress=False))
    caption(tmp_path / "in", tmp_path / "b", config, RunOptions(chunk_size=25, progress=False))
    texts = [r["text"] for r in iter_rows(tmp_path / "a")]
    assert len(texts) == 120 and all(isinstance(t, str) and t for t in texts)
    assert texts == [r["text"] for r in iter_rows(tmp_path / "b")]  # greedy: chunking changes nothing


def constant_captioner(model: str):
    """A user captioner factory, loaded by module path."""
    return lambda images: [f"{model}: {im.width}x{im.height}" for im in images]


def test_captioner_pluggable_by_module_path(toy_web, tmp_path):
    ingest(toy_web, tmp_path / "in", options=QUIET)
    caption(
        tmp_path / "in",
        tmp_path / "out",
        CaptionConfig(captioner=f"{__name__}:constant_captioner", model="m"),
        QUIET,
    )
    rows = list(iter_rows(tmp_path / "out"))
    assert len(rows) == 120 and [r["text"] for r in rows] == [f"m: {r['width']}x{r['height']}" for r in rows]
