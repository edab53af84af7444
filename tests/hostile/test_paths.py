"""Hostile paths through the real command line: dataset file names leading out of their folder,
outputs written over their own inputs, ``..`` after a folder that does not exist yet, and a
finished stage output reused by another stage. Every case runs ``edgefusion`` in-process and
checks the exit code, a one-line error without a traceback, and that nothing outside the output
changed (every file under the test folder hashed before and after)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from micro_models import micro_unet_config

from edgefusion.data.dataset import iter_rows

SECRET = b"host secret: must never be read into a dataset"


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``edgefusion ARGS`` as the console script runs it: (exit code, stderr then stdout)."""
    from edgefusion.cli import main

    monkeypatch.setattr(sys, "argv", ["edgefusion", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def tree_hashes(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Content hash of every file and link under ``root`` (except under ``skip``)."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_symlink():
            hashes[str(path)] = "link:" + str(path.readlink())
        elif path.is_file():
            hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@dataclass
class Case:
    """``setup(root, dataset, pipeline)`` makes the files and returns the arguments; the error
    must contain ``message``."""

    name: str
    setup: Callable[[Path, Path, Path], list[str]]
    message: str


def _same(root: Path, name: str, source: Path) -> Path:
    return Path(shutil.copytree(source, root / name, symlinks=True))


def _quantize_over_itself(root, dataset, pipeline):
    model = _same(root, "model", pipeline)
    return ["quantize", "--model", str(model), "--out", str(model), "--overwrite"]


def _quantize_over_its_parent(root, dataset, pipeline):
    model = _same(root / "par", "model", pipeline)
    (root / "par" / "notes.txt").write_text("keep me")
    return ["quantize", "--model", str(model), "--out", str(root / "par"), "--overwrite"]


def _compress_over_itself(root, dataset, pipeline):
    model = _same(root, "model", pipeline)
    return [
        "compress",
        "--model",
        str(model),
        "--variant",
        "tiny",
        "--out",
        str(model),
        "--overwrite",
    ]


def _compress_inside_itself(root, dataset, pipeline):
    model = _same(root, "model", pipeline)
    return [
        "compress",
        "--model",
        str(model),
        "--variant",
        "tiny",
        "--out",
        str(model / "unet" / "x"),
    ]


def _dedup_over_itself(root, dataset, pipeline):
    data = _same(root, "data", dataset)
    return ["data", "dedup", "--data", str(data), "--out", str(data), "--overwrite"]


def _ingest_through_a_missing_folder(root, dataset, pipeline):
    data = _same(root, "data", dataset)
    victim = root / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return ["data", "ingest", "--data", str(data), "--out", str(root / "nodir" / ".." / "victim")]


def _filter_into_an_ingest_output(root, dataset, pipeline):
    data = _same(root, "data", dataset)
    ingested = root / "ingested"
    from edgefusion.data.ingest import ingest
    from edgefusion.data.runner import RunOptions

    ingest(data, ingested, options=RunOptions(progress=False))
    return ["data", "filter", "--data", str(data), "--out", str(ingested), "--min-side", "1000"]


def _train_over_its_pipeline(root, dataset, pipeline):
    model = _same(root, "model", pipeline)
    config = root / "unet.json"
    config.write_text(json.dumps(micro_unet_config()))
    args = [f"pipeline={model}", f"unet_config={config}", f"data.path={dataset}", "data.resolution=16"]
    return ["train", *args, f"out={model}", "overwrite=true", f"run_dir={root / 'run'}"]


def _train_with_checkpoints_in_its_data(root, dataset, pipeline):
    data = _same(root, "data", dataset)
    config = root / "unet.json"
    config.write_text(json.dumps(micro_unet_config()))
    args = [f"pipeline={pipeline}", f"unet_config={config}", f"data.path={data}", "data.resolution=16"]
    return ["train", *args, f"out={root / 'out'}", f"run_dir={data / 'run'}"]


REFUSED = [
    Case("quantize M --out M --overwrite", _quantize_over_itself, "is the input"),
    Case("quantize par/model --out par --overwrite", _quantize_over_its_parent, "contains the input"),
    Case("compress --teacher T --out T --overwrite", _compress_over_itself, "is the input"),
    Case("compress --teacher T --out T/unet/x", _compress_inside_itself, "lies inside the input"),
    Case("data dedup --in D --out D --overwrite", _dedup_over_itself, "is the input"),
    Case(
        "data ingest --out X/nodir/../victim", _ingest_through_a_missing_folder, "not a finished stage output"
    ),
    Case("data filter --out <ingest's output>", _filter_into_an_ingest_output, "another stage and config"),
    Case("train out=<its pipeline> overwrite=true", _train_over_its_pipeline, "is the input"),
    Case("train run_dir=<inside its data>", _train_with_checkpoints_in_its_data, "run_dir"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_outputs_that_would_destroy_an_input_are_refused(
    case, tmp_path, dataset, pipeline, capsys, monkeypatch
):
    args = case.setup(tmp_path, dataset, pipeline)
    before = tree_hashes(tmp_path)
    code, err = run_cli(args, capsys, monkeypatch)
    assert code == 1, err
    assert case.message in " ".join(err.split()) and "Traceback" not in err  # rich wraps lines
    assert err.lstrip().startswith("error:") and err.count("error:") == 1, err  # one message
    assert tree_hashes(tmp_path) == before


def _hostile_dataset(root: Path, dataset: Path) -> Path:
    """The toy dataset plus rows naming a host file absolutely, through '..', and by a symlink."""
    data = _same(root, "data", dataset)
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(SECRET)
    (data / "link.png").symlink_to(outside / "secret.png")
    rows = [
        {"file_name": str(outside / "secret.png"), "text": "absolute", "id": "absolute"},
        {"file_name": "../outside/secret.png", "text": "dot-dot", "id": "dotdot"},
        {"file_name": "link.png", "text": "a symlink out", "id": "link"},
        {"file_name": None, "text": "null name", "id": "null"},
    ]
    with (data / "metadata.jsonl").open("a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return data


@pytest.mark.parametrize("stage", ["ingest", "dedup", "filter", "crop"])
def test_dataset_names_leading_out_are_rejected_with_a_reason(stage, tmp_path, dataset, capsys, monkeypatch):
    data = _hostile_dataset(tmp_path, dataset)
    out = tmp_path / "out"
    before = tree_hashes(tmp_path, skip=out)
    settings = ["--min-side", "32"] if stage == "filter" else []  # the toy images are 32 px
    code, err = run_cli(
        ["data", stage, "--data", str(data), "--out", str(out), *settings], capsys, monkeypatch
    )
    assert code == 0, err
    reasons = {row["id"]: row["reason"] for row in iter_rows(out, "rejects.jsonl")}
    assert "absolute" in reasons["absolute"]
    assert "'..'" in reasons["dotdot"]
    assert "symlink" in reasons["link"]
    assert len(list(iter_rows(out))) == 6  # the toy samples are all kept
    assert all(f.read_bytes() != SECRET for f in out.rglob("*") if f.is_file())
    assert tree_hashes(tmp_path, skip=out) == before


def test_shard_packs_no_host_file(tmp_path, dataset, capsys, monkeypatch):
    data = _hostile_dataset(tmp_path, dataset)
    out = tmp_path / "shards"
    code, err = run_cli(["data", "shard", "--data", str(data), "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    assert not any(SECRET in f.read_bytes() for f in out.rglob("*") if f.is_file())
