"""``generate`` on micro models: the right sampler per model kind, same seed same pixels whatever
the batch, metadata in the PNG and the log, resume, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from micro_models import random_unet, write_lcm_pipeline, write_pipeline
from PIL import Image
from typer.testing import CliRunner

from edgefusion.errors import EdgefusionError
from edgefusion.generate import LOG_FILE, generate, read_png_metadata
from edgefusion.pipeline.load import load_pipeline as load_generation_pipeline

PROMPTS = ["a red circle", "a small blue square at the left on a white background", "a green star"]


@pytest.fixture(scope="module")
def sd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("sd") / "model", random_unet())


@pytest.fixture(scope="module")
def lcm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro LCM: guidance embedding with non-zero weights (so the scale matters), LCMScheduler."""
    return write_lcm_pipeline(tmp_path_factory.mktemp("lcm") / "model")


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def _unet_batch_sizes(pipe) -> list[int]:
    sizes: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    return sizes


def test_lcm_models_sample_with_lcm_and_embedded_guidance_without_batch_doubling(lcm_model, tmp_path) -> None:
    pipe = load_generation_pipeline(lcm_model)
    assert type(pipe).__name__ == "LatentConsistencyModelPipeline"
    sizes = _unet_batch_sizes(pipe)
    records = generate(
        PROMPTS[:2], lcm_model, out=tmp_path / "a", steps=2, guidance=3.0, pipe=pipe, progress=False
    )
    assert sizes == [2, 2]  # two steps, one call each, no uncond half
    assert {r["scheduler"] for r in records} == {"LCMScheduler"} and all(r["lcm"] for r in records)
    other = generate(
        PROMPTS[:2], lcm_model, out=tmp_path / "b", steps=2, guidance=6.0, pipe=pipe, progress=False
    )
    assert other[0]["guidance"] == 6.0
    assert not np.array_equal(_pixels(tmp_path / "a")["00000.png"], _pixels(tmp_path / "b")["00000.png"])


def test_sd_models_sample_with_classifier_free_guidance(sd_model, tmp_path) -> None:
    pipe = load_generation_pipeline(sd_model, scheduler="ddim")
    sizes = _unet_batch_sizes(pipe)
    records = generate(PROMPTS[:1], sd_model, out=tmp_path, steps=3, pipe=pipe, progress=False)
    assert sizes == [2, 2, 2]  # cond + uncond in one call per step
    assert records[0]["scheduler"] == "DDIMScheduler" and records[0]["guidance"] == 7.5
    assert records[0]["steps"] == 3 and records[0]["size"] == 16


def test_the_guidance_a_model_records_is_the_default(sd_model, tmp_path) -> None:
    import shutil

    from edgefusion.provenance import PROVENANCE_FILE

    recorded = shutil.copytree(sd_model, tmp_path / "model")
    (recorded / "unet" / PROVENANCE_FILE).write_text(json.dumps({"stage": "train", "guidance_scale": 2.0}))
    records = generate(PROMPTS[:1], recorded, out=tmp_path / "a", steps=1, progress=False)
    assert records[0]["guidance"] == 2.0
    records = generate(PROMPTS[:1], recorded, out=tmp_path / "b", steps=1, guidance=4.0, progress=False)
    assert records[0]["guidance"] == 4.0  # an explicit scale wins


def test_same_seed_same_image_whatever_the_batch(lcm_model, tmp_path) -> None:
    generate(PROMPTS, lcm_model, out=tmp_path / "one", n=2, steps=2, batch_size=1, progress=False)
    generate(PROMPTS, lcm_model, out=tmp_path / "all", n=2, steps=2, batch_size=6, progress=False)
    one, together = _pixels(tmp_path / "one"), _pixels(tmp_path / "all")
    assert list(one) == [f"{k:05d}.png" for k in range(6)]
    assert all(np.array_equal(one[name], together[name]) for name in one)
    assert not np.array_equal(one["00000.png"], one["00001.png"])  # seeds 0 and 1 differ


def test_metadata_round_trips_through_png_and_log(lcm_model, tmp_path) -> None:
    records = generate(PROMPTS[1:], lcm_model, out=tmp_path, steps=1, guidance=2.5, seed=40, progress=False)
    logged = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert logged == list(records)
    for record in records:
        assert read_png_metadata(tmp_path / record["file_name"]) == record
    assert records[1] == {
        "file_name": "00001.png",
        "prompt": PROMPTS[2],
        "seed": 41,
        "steps": 1,
        "guidance": 2.5,
        "model": str(lcm_model),
        "scheduler": "LCMScheduler",
        "size": 16,
        "backend": "torch",
        "lcm": True,
    }


def test_an_interrupted_run_resumes_and_keeps_finished_images(lcm_model, tmp_path) -> None:
    generate(PROMPTS, lcm_model, out=tmp_path, steps=2, progress=False)
    before = _pixels(tmp_path)
    (tmp_path / "00001.png").unlink()
    kept = (tmp_path / "00000.png").stat().st_mtime_ns
    pipe = load_generation_pipeline(lcm_model)
    sizes = _unet_batch_sizes(pipe)
    generate(PROMPTS, lcm_model, out=tmp_path, steps=2, pipe=pipe, progress=False)
    assert sizes == [1, 1]  # only the missing image was made
    assert (tmp_path / "00000.png").stat().st_mtime_ns == kept
    assert all(np.array_equal(before[n], image) for n, image in _pixels(tmp_path).items())
    assert len((tmp_path / LOG_FILE).read_text().splitlines()) == 3
    with pytest.raises(EdgefusionError, match="steps differ"):
        generate(PROMPTS, lcm_model, out=tmp_path, steps=4, progress=False)


def test_bad_requests_are_clear_errors(lcm_model, tmp_path) -> None:
    cases = [
        ([""], {}, "prompt 0 is empty"),
        (["ok", "  "], {}, "prompt 1 is empty"),
        (["ok"], {"size": 20}, "multiple of 16"),
        (["ok"], {"steps": 0}, "steps must be at least 1"),
        (["ok"], {"backend": "tflite"}, "unknown backend"),
    ]
    for prompts, kwargs, message in cases:
        with pytest.raises(EdgefusionError, match=message):
            generate(prompts, lcm_model, out=tmp_path, progress=False, **kwargs)
    with pytest.raises(EdgefusionError, match="not found"):
        generate(["ok"], tmp_path / "nothing-here", out=tmp_path, progress=False)
    with pytest.raises(EdgefusionError, match="lcm scheduler"):
        load_generation_pipeline(lcm_model, scheduler="ddim")


def test_a_prompt_over_77_tokens_is_truncated_with_a_warning(lcm_model, tmp_path) -> None:
    long = " ".join(["a red circle"] * 40)
    with pytest.warns(UserWarning, match="prompt 1 has 12[0-9] tokens but the text encoder reads 77"):
        generate(["a red circle", long], lcm_model, out=tmp_path, steps=1, progress=False)
    assert (tmp_path / "00001.png").is_file()


def test_cli_generates_from_a_prompt_file(lcm_model, tmp_path) -> None:
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    (tmp_path / "prompts.txt").write_text("a red circle\n\na green star\n")
    result = CliRunner().invoke(
        app,
        ["generate", "--model", str(lcm_model), "--prompts", str(tmp_path / "prompts.txt"), "--n", "2"]
        + ["--out", str(tmp_path / "out"), "--seed", "5"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "wrote 4 images" in result.output and "LCMScheduler, 2 steps" in result.output
    assert read_png_metadata(tmp_path / "out" / "00003.png")["seed"] == 8
