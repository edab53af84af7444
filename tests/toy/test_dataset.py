"""The toy dataset writer: imagefolder layout, determinism, true captions, atomic output, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from edgefusion.errors import EdgefusionError
from edgefusion.toy import dataset
from edgefusion.toy.captions import parse
from edgefusion.toy.dataset import data_command, write_toy_dataset
from edgefusion.toy.web import FLAWS, WebFlawConfig
from edgefusion.toy.world import Scene


def read_rows(folder: Path) -> list[dict]:
    lines = (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> Path:
    return write_toy_dataset(
        tmp_path_factory.mktemp("clean") / "data", "clean", n=150, seed=0, progress=False
    )


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path, clean_dir):
    again = write_toy_dataset(tmp_path / "again", "clean", n=150, seed=0, progress=False)
    other = write_toy_dataset(tmp_path / "other", "clean", n=150, seed=1, progress=False)
    assert folder_contents(again) == folder_contents(clean_dir)
    assert (other / "metadata.jsonl").read_bytes() != (clean_dir / "metadata.jsonl").read_bytes()
    assert (other / "00000000.png").read_bytes() != (clean_dir / "00000000.png").read_bytes()


def test_web_variant_is_deterministic_too(tmp_path):
    first = write_toy_dataset(tmp_path / "a", "web", n=100, seed=4, progress=False)
    second = write_toy_dataset(tmp_path / "b", "web", n=100, seed=4, progress=False)
    other = write_toy_dataset(tmp_path / "c", "web", n=100, seed=5, progress=False)
    assert folder_contents(first) == folder_contents(second)
    assert folder_contents(first) != folder_contents(other)


def test_layout_follows_the_imagefolder_convention(clean_dir):
    rows = read_rows(clean_dir)
    assert len(rows) == 150
    images = {p.name for p in clean_dir.iterdir()} - {"metadata.jsonl", "stats.json"}
    assert images == {r["file_name"] for r in rows}
    for row in rows:
        assert isinstance(row["text"], str) and row["text"]
        with Image.open(clean_dir / row["file_name"]) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            assert image.size == (row["width"], row["height"]) == (64, 64)
        assert Scene.from_dict(row["record"]).to_dict() == row["record"]
        assert "flaws" not in row
    stats = json.loads((clean_dir / "stats.json").read_text(encoding="utf-8"))
    assert stats == {"kind": "clean", "n": 150, "seed": 0, "size": 64, "formats": {"png": 150}}


def test_clean_captions_state_the_record_and_no_held_out_combination(clean_dir):
    for row in read_rows(clean_dir):
        record, parsed = Scene.from_dict(row["record"]), parse(row["text"])
        assert not record.has_held_out_combo()
        assert parsed is not None, row["text"]
        assert (parsed.background, parsed.relation) == (record.background, record.relation)
        for said, truth in zip(parsed.objects, record.objects, strict=True):
            assert (said.shape, said.color) == (truth.shape, truth.color)
            assert said.size in (None, truth.size) and said.position in (None, truth.position)


def test_web_stats_count_the_labelled_flaws(tmp_path):
    out = write_toy_dataset(tmp_path / "web", "web", n=120, seed=2, size=48, progress=False)
    rows = read_rows(out)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["flaw_counts"] == {f: sum(f in r["flaws"] for r in rows) for f in FLAWS}
    assert stats["flawless"] == sum(not r["flaws"] for r in rows)
    assert sum(stats["formats"].values()) == 120
    assert stats["web_config"]["off_center"] == WebFlawConfig().off_center


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()  # an empty folder is fine to fill
    write_toy_dataset(out, "clean", n=3, seed=0, progress=False)
    with pytest.raises(EdgefusionError, match="--overwrite"):
        write_toy_dataset(out, "clean", n=5, seed=0, progress=False)
    write_toy_dataset(out, "clean", n=5, seed=0, overwrite=True, progress=False)
    assert len(read_rows(out)) == 5


def test_a_failure_half_way_leaves_no_output(tmp_path, monkeypatch):
    real = dataset.clean_sample

    def failing(seed, index, size):
        if index == 3:
            raise RuntimeError("disk gone")
        return real(seed, index, size)

    monkeypatch.setattr(dataset, "clean_sample", failing)
    with pytest.raises(RuntimeError):
        write_toy_dataset(tmp_path / "data", "clean", n=6, seed=0, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "dirty"},
        {"n": 0},
        {"size": 16},
        {"size": 4096},
        {"kind": "clean", "web_config": WebFlawConfig()},
    ],
)
def test_bad_requests_are_refused_before_any_work(tmp_path, kwargs):
    with pytest.raises(EdgefusionError):
        write_toy_dataset(tmp_path / "data", **{"kind": "web", "n": 4, **kwargs})
    assert not (tmp_path / "data").exists()


def cli() -> typer.Typer:
    app = typer.Typer()
    toy_app = typer.Typer()
    toy_app.command("data")(data_command)
    app.add_typer(toy_app, name="toy")
    return app


def test_cli_writes_web_data_with_rates_from_a_file_and_options(tmp_path):
    config_file = tmp_path / "web.json"
    config_file.write_text(json.dumps({"off_center": 0.5, "jpeg_artifacts": 0.3}), encoding="utf-8")
    out = tmp_path / "data"
    args = ["toy", "data", "--kind", "web", "--n", "40", "--seed", "1", "--out", str(out)]
    args += ["--web-config", str(config_file), "--jpeg-artifacts-rate", "0.0"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert "40 web samples" in result.output
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["web_config"]["off_center"] == 0.5 and stats["web_config"]["jpeg_artifacts"] == 0.0
    assert stats["flaw_counts"]["jpeg_artifacts"] == 0 and stats["flaw_counts"]["off_center"] > 10


@pytest.mark.parametrize(
    "extra",
    [
        ["--kind", "dirty"],
        ["--kind", "web", "--off-center-rate", "2"],
        ["--kind", "clean", "--off-center-rate", "0.1"],
    ],
)
def test_cli_errors_are_edgefusion_errors(tmp_path, extra):
    args = ["toy", "data", "--n", "3", "--out", str(tmp_path / "d"), *extra]
    result = CliRunner().invoke(cli(), args)
    assert isinstance(result.exception, EdgefusionError)
