"""Synthesis: balanced prompts, exact renders with their records, LLM rewriting (endpoint and local)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from PIL import Image

from edgefusion.data.dataset import iter_rows
from edgefusion.data.prompts import rewrite_with_local_llm, template_prompts
from edgefusion.data.runner import RunOptions
from edgefusion.data.synthesize import SynthConfig, synthesize
from edgefusion.errors import EdgefusionError
from edgefusion.toy.captions import parse
from edgefusion.toy.curation import balanced_toy_scenes, caption_agrees, toy_prompts
from edgefusion.toy.world import HELD_OUT_COMBOS, SHAPES


def test_toy_scenes_are_balanced_and_valid():
    scenes = list(balanced_toy_scenes(400, seed=0))
    backgrounds = Counter(s.background for s in scenes)
    layouts = Counter(len(s.objects) for s in scenes)
    shapes = Counter(o.shape for s in scenes for o in s.objects)
    colours = Counter(o.color for s in scenes for o in s.objects)
    assert set(backgrounds.values()) == {50} and set(layouts.values()) == {200}
    assert len(shapes) == len(SHAPES) and max(shapes.values()) - min(shapes.values()) <= 1
    assert max(colours.values()) - min(colours.values()) <= 8
    for scene in scenes:
        assert all(o.color != scene.background for o in scene.objects)
        assert not any((o.color, o.shape) in HELD_OUT_COMBOS for o in scene.objects)
    assert all(parse(p) is not None for p in toy_prompts(50, seed=1))


def test_template_prompts_balance_every_slot():
    prompts = template_prompts(
        ["a photo of a {age} {person}", "a portrait of a {age} {person}"],
        {"age": ["young", "old"], "person": ["woman", "man", "child"]},
        n=12,
        seed=0,
    )
    assert len(prompts) == 12
    assert sum("young" in p for p in prompts) == 6 and sum(p.endswith("child") for p in prompts) == 4
    with pytest.raises(EdgefusionError, match="slot"):
        template_prompts(["a {thing}"], {}, 1, 0)


def test_rendered_pairs_match_their_prompts_whatever_the_chunking(tmp_path):
    config = SynthConfig(n=20, seed=5)
    stats = synthesize(tmp_path / "a", config, RunOptions(chunk_size=7, progress=False))
    synthesize(tmp_path / "b", config, RunOptions(chunk_size=20, progress=False))
    rows = list(iter_rows(tmp_path / "a"))
    assert stats["kept"] == 20 and [r["seed"] for r in rows] == list(range(5, 25))
    assert all(caption_agrees(r["text"], r["record"]) for r in rows)
    assert rows == list(iter_rows(tmp_path / "b"))
    assert all(
        (tmp_path / "a" / r["file_name"]).read_bytes() == (tmp_path / "b" / r["file_name"]).read_bytes()
        for r in rows
    )


class _ChatHandler(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body, self.headers.get("Authorization")))
        prompt = body["messages"][0]["content"].split(": ", 1)[1]
        answer = {"choices": [{"message": {"content": f"a detailed photo: {prompt}\n"}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_compatible_endpoint_rewrites_prompts(tmp_path, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        monkeypatch.setenv("TOY_LLM_KEY", "secret")
        config = SynthConfig(
            n=3, llm_endpoint=url, llm_api_model="local-model", llm_api_key_env="TOY_LLM_KEY"
        )
        synthesize(tmp_path / "out", config, RunOptions(progress=False))
    finally:
        server.shutdown()
    rows = list(iter_rows(tmp_path / "out"))
    assert [r["text"] for r in rows] == [f"a detailed photo: {r['prompt']}" for r in rows]
    assert all(caption_agrees(r["text"], r["record"]) for r in rows)  # rendered from the rewritten prompt
    path, body, auth = _ChatHandler.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "local-model" and body["temperature"] == 0
    assert auth == "Bearer secret"
    assert "secret" not in (tmp_path / "out" / "stats.json").read_text()


def test_local_transformers_llm_rewrites_greedily(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from edgefusion.toy.tokenizer import load_toy_tokenizer

    torch.manual_seed(0)
    tok = load_toy_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    first = rewrite_with_local_llm(
        ["a red star", "a blue disc"], str(tmp_path / "lm"), "Rewrite: {prompt}", 6
    )
    again = rewrite_with_local_llm(
        ["a red star", "a blue disc"], str(tmp_path / "lm"), "Rewrite: {prompt}", 6
    )
    assert first == again and all(isinstance(p, str) and p for p in first)


def _micro_pipeline(folder):
    """A random micro Stable Diffusion pipeline folder in the toy teacher's layout."""
    import torch
    from transformers import CLIPModel

    from edgefusion.toy.models import ToyModelSizes, build_unet, build_vae, clip_config
    from edgefusion.toy.tokenizer import load_toy_tokenizer
    from edgefusion.toy.train import assemble_pipeline, text_encoder_from_clip

    torch.manual_seed(0)
    sizes = ToyModelSizes(
        text_hidden=32, text_layers=1, text_heads=2, vision_hidden=32, vision_layers=1, vision_patch=16,
        projection_dim=16, vae_widths=(8, 16, 16), vae_norm_groups=4, unet_widths=(16, 16, 32, 32),
        unet_head_dim=4, unet_norm_groups=8, image_size=32,
    )  # fmt: skip
    tok = load_toy_tokenizer()
    encoder = text_encoder_from_clip(
        CLIPModel(clip_config(len(tok), tok.eos_token_id, tok.bos_token_id, sizes))
    )
    pipe = assemble_pipeline(tok, encoder, build_vae(sizes), build_unet(sizes, latent_size=8))
    pipe.save_pretrained(folder)
    return folder


def test_diffusers_pipeline_generator_is_seeded_per_image(tmp_path):
    model = _micro_pipeline(tmp_path / "pipe")
    config = SynthConfig(n=4, seed=3, generator=str(model), steps=2, batch_size=3)
    synthesize(tmp_path / "a", config, RunOptions(chunk_size=4, progress=False))
    synthesize(tmp_path / "b", config, RunOptions(chunk_size=1, progress=False))
    rows = list(iter_rows(tmp_path / "a"))
    assert [(r["width"], r["height"], r["generator"]) for r in rows] == [(32, 32, str(model))] * 4
    assert "record" not in rows[0]  # a model's image has no exact attributes
    # Image i depends on its seed only, not on its batch or chunk. Batched CPU kernels may round
    # differently per batch size, so equality is up to one 8-bit level, while seeds differ by far more.
    pixels = {
        run: [np.asarray(Image.open(tmp_path / run / r["file_name"]), dtype=np.int16) for r in rows]
        for run in ("a", "b")
    }
    for a, b in zip(pixels["a"], pixels["b"], strict=True):
        assert np.abs(a - b).max() <= 1
    assert np.abs(pixels["a"][0] - pixels["a"][1]).mean() > 5
