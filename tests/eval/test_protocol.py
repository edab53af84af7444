"""The COCO protocol on image folders with a tiny Inception and a tiny CLIP (no downloads)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgefusion.errors import EdgefusionError
from edgefusion.eval.clip import load_clip
from edgefusion.eval.prompts import read_prompts
from edgefusion.eval.protocol import EvalConfig, compute_statistics, evaluate


def _prompts(path: Path, n: int) -> Path:
    path.write_text("\n".join(f"prompt number {i}" for i in range(n)) + "\n")
    return path


def _fid(tmp_path, inception, prompts, images, reference, name) -> float:
    config = EvalConfig(
        prompts=prompts, out=tmp_path / name, images=images, fid_reference=reference, resize=None
    )
    return evaluate(config, inception=inception)["fid"]


def test_fid_of_a_set_against_itself_is_zero_and_rises_with_noise(
    tmp_path, tiny_inception, image_arrays, write_images
):
    prompts = _prompts(tmp_path / "p.txt", len(image_arrays))
    reference = tmp_path / "ref"
    write_images(reference, image_arrays)
    rng = np.random.default_rng(1)
    fids = [_fid(tmp_path, tiny_inception, prompts, reference, reference, "same")]
    for sigma in (20, 60):
        noisy = np.clip(image_arrays + rng.normal(0, sigma, image_arrays.shape), 0, 255).astype(np.uint8)
        write_images(tmp_path / f"noisy{sigma}", noisy)
        fids.append(
            _fid(tmp_path, tiny_inception, prompts, tmp_path / f"noisy{sigma}", reference, f"n{sigma}")
        )
    assert abs(fids[0]) < 1e-6
    assert fids[0] < fids[1] < fids[2]
    saved = json.loads((tmp_path / "n60" / "metrics.json").read_text())
    assert saved["fid"] == pytest.approx(fids[2]) and saved["n_images"] == len(image_arrays)
    assert "| FID |" in (tmp_path / "n60" / "metrics.md").read_text()


def test_a_statistics_file_gives_the_same_fid_as_its_folder(
    tmp_path, tiny_inception, image_arrays, write_images
):
    prompts = _prompts(tmp_path / "p.txt", 20)
    write_images(tmp_path / "gen", image_arrays[:20])
    write_images(tmp_path / "ref", image_arrays[20:])
    stats = compute_statistics(
        tmp_path / "ref", tmp_path / "ref.npz", None, resize=16, inception=tiny_inception
    )
    by_folder = EvalConfig(
        prompts=prompts, out=tmp_path / "a", images=tmp_path / "gen", fid_reference=tmp_path / "ref"
    )
    by_stats = EvalConfig(prompts=prompts, out=tmp_path / "b", images=tmp_path / "gen", fid_reference=stats)
    by_folder.resize = by_stats.resize = 16
    assert evaluate(by_stats, tiny_inception)["fid"] == pytest.approx(
        evaluate(by_folder, tiny_inception)["fid"]
    )


def test_clip_score_equals_a_hand_computation(tmp_path, tiny_clip, image_arrays, write_images):
    write_images(tmp_path / "gen", image_arrays[:4])
    prompts = ["a red circle", "a blue square", "two green stars", "a yellow cross"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"caption": p}) + "\n" for p in prompts))
    config = EvalConfig(
        prompts=tmp_path / "p.jsonl", out=tmp_path / "out", images=tmp_path / "gen", clip=tiny_clip
    )
    config.resize = None  # 32 px images at the CLIP's own 32 px input: no resampling in the way
    score = evaluate(config)["clip_score"]

    scorer = load_clip(tiny_clip)
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = torch.from_numpy(((image_arrays[:4] / 255.0 - mean) / std).transpose(0, 3, 1, 2)).float()
    ids = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        image = scorer.model.get_image_features(pixel_values=pixels)
        text = scorer.model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask)
    image, text = (t if torch.is_tensor(t) else t.pooler_output for t in (image, text))
    image, text = image.numpy().astype(np.float64), text.numpy().astype(np.float64)
    cosines = (image * text).sum(1) / np.linalg.norm(image, axis=1) / np.linalg.norm(text, axis=1)
    assert score == pytest.approx(cosines.mean(), abs=1e-5)


def test_toy_metrics_plug_in_as_one_more_evaluator(tmp_path, write_images):
    from edgefusion.toy.metrics import render_prompts

    prompts = ["a red circle on a white background", "a small blue square at the top on a black background"]
    rendered = (render_prompts(prompts, seed=3) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    write_images(tmp_path / "gen", rendered)
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    result = evaluate(
        EvalConfig(prompts=tmp_path / "p.txt", out=tmp_path / "o", images=tmp_path / "gen", toy=True)
    )
    assert result["toy"]["n"] == 2 and result["toy"]["accuracy_all"] == 1.0
    assert "toy attribute accuracy" in (tmp_path / "o" / "metrics.md").read_text()


def test_coco_metadata_names_the_images(tmp_path, tiny_inception, image_arrays):
    (tmp_path / "gen").mkdir()
    names = [f"COCO_val2014_{i:012d}.jpg" for i in range(10)]
    for name, array in zip(names, image_arrays, strict=False):
        Image.fromarray(array).save(tmp_path / "gen" / name)
    (tmp_path / "metadata.csv").write_text("file_name,text\n" + "".join(f"{n},caption {n}\n" for n in names))
    rows = read_prompts(tmp_path / "metadata.csv")
    assert rows[3].file_name == names[3] and rows[3].text == f"caption {names[3]}"
    config = EvalConfig(prompts=tmp_path / "metadata.csv", out=tmp_path / "o", images=tmp_path / "gen")
    config.inception_weights = Path("unused")  # selects IS; the tiny network replaces the file
    result = evaluate(config, tiny_inception)
    assert result["n_images"] == 10 and result["is_mean"] >= 1.0


def test_user_errors_are_clear(tmp_path, tiny_inception, image_arrays, write_images):
    prompts = _prompts(tmp_path / "p.txt", 3)
    write_images(tmp_path / "gen", image_arrays[:2])
    config = EvalConfig(prompts=prompts, out=tmp_path / "o", images=tmp_path / "gen")
    with pytest.raises(EdgefusionError, match="no evaluator selected"):
        evaluate(config)
    config.fid_reference = tmp_path / "gen"
    with pytest.raises(EdgefusionError, match="pt_inception-2015-12-05"):
        evaluate(config)
    with pytest.raises(EdgefusionError, match="1 of 3 images are missing"):
        evaluate(config, tiny_inception)


def test_cli_stats_without_weights_is_one_clear_line(tmp_path, image_arrays, write_images):
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    write_images(tmp_path / "ref", image_arrays[:3])
    result = CliRunner().invoke(
        app, ["eval", "stats", str(tmp_path / "ref"), "--out", str(tmp_path / "s.npz")]
    )
    assert isinstance(result.exception, EdgefusionError)
    assert "--inception-weights pt_inception-2015-12-05-6726825d.pth" in str(result.exception)


def test_generates_with_a_toy_model_scores_it_and_resumes(tmp_path):
    prompts = ["a red circle on a white background", "a blue square on a black background"]
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    config = EvalConfig(
        prompts=tmp_path / "p.txt", out=tmp_path / "o", model="toy:bk-tiny-adv", steps=2, seed=5
    )
    result = evaluate(config)
    assert result["toy"]["n"] == 2 and 0.0 <= result["toy"]["accuracy_all"] <= 1.0
    first = tmp_path / "o" / "images" / "00000.png"
    records = [
        json.loads(line)
        for line in (tmp_path / "o" / "images" / "generations.jsonl").read_text().splitlines()
    ]
    assert [r["seed"] for r in records] == [5, 6]
    stamp = first.stat().st_mtime_ns
    assert evaluate(config)["toy"] == result["toy"]  # resumed: images kept, same scores
    assert first.stat().st_mtime_ns == stamp
