"""Careless and hostile input through the real command line: corrupt model files, binary or
malformed files where text is expected, numbers a model cannot take (sizes, seeds, guidance,
limits), requests that cannot fit in memory, outputs that cannot be written. Every case runs
``edgefusion`` in-process and checks exit code 1, one error line without a traceback, and that
nothing outside the command's output folder changed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_paths import run_cli, tree_hashes

TOY_PROMPTS = (
    "a large red circle at the left on a blue background\n"
    "a blue square above a red star on a white background\n"
)


@dataclass
class Case:
    """``setup(root, dataset, pipeline)`` makes the files and returns the arguments (the command's
    output, if any, is ``root / "out"``); the one error line must contain ``message``."""

    name: str
    setup: Callable[[Path, Path, Path], list[str]]
    message: str


def _copy(root: Path, source: Path) -> Path:
    return Path(shutil.copytree(source, root / "model"))


def _truncated(root: Path, pipeline: Path) -> Path:
    model = _copy(root, pipeline)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return model


def _invalid_json(root: Path, pipeline: Path) -> Path:
    model = _copy(root, pipeline)
    (model / "unet" / "config.json").write_text('{"block_out_channels": [32, 64,')
    return model


def _file(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


BINARY = bytes(range(256)) * 4  # not UTF-8 from byte 0x80 on
OUT = "out"

# How each sampling command is pointed at a model folder.
_MODEL_COMMANDS = {
    "generate": lambda model, out: ["generate", "a red circle", "--model", str(model), "--out", str(out)],
    "quantize": lambda model, out: ["quantize", "--model", str(model), "--out", str(out)],
    "data synthesize": lambda model, out: (
        ["data", "synthesize", "--generator", str(model), "--num-prompts", "2"] + ["--out", str(out)]
    ),
}


def _corrupt_model_case(command: str, damage: str, make: Callable, message: str) -> Case:
    args = _MODEL_COMMANDS[command]
    return Case(
        f"{command}: {damage}", lambda root, _, pipeline: args(make(root, pipeline), root / OUT), message
    )


def _corrupt_model_cases() -> list[Case]:
    return [
        _corrupt_model_case(command, damage, make, message)
        for command in _MODEL_COMMANDS
        for damage, make, message in (
            ("truncated safetensors", _truncated, "truncated or corrupt"),
            ("invalid config.json", _invalid_json, "is not valid JSON"),
        )
    ]


def _generate(*extra: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda root, dataset, pipeline: (
        ["generate", "a red circle", "--model", str(pipeline)]
        + [
            "--steps",
            "1",
            "--out",
            str(root / OUT),
            *extra,
        ]
    )


def _toy_eval(prompts: str | None, *extra: str) -> Callable[[Path, Path, Path], list[str]]:
    def setup(root, dataset, pipeline):
        given = [] if prompts is None else ["--prompts", str(_file(root, "prompts.txt", prompts))]
        return ["toy", "eval", "--model", str(pipeline), "--steps", "1", *given, *extra]

    return setup


def _eval_toy(
    prompts: str, name: str = "prompts.txt", *extra: str
) -> Callable[[Path, Path, Path], list[str]]:
    def setup(root, dataset, pipeline):
        file = _file(root, name, prompts)
        return ["eval", "--toy", "--prompts", str(file), "--model", str(pipeline), "--steps", "1"] + [
            "--out",
            str(root / OUT),
            *extra,
        ]

    return setup


def _generate_into_a_file(root, dataset, pipeline):
    _file(root, OUT, "not a folder")
    return ["generate", "a red circle", "--model", str(pipeline), "--out", str(root / OUT)]


def _generate_under_a_file(root, dataset, pipeline):
    _file(root, "notes.txt", "keep me")
    return ["generate", "a red circle", "--model", str(pipeline), "--out", str(root / "notes.txt" / OUT)]


def _generate_binary_prompts(root, dataset, pipeline):
    prompts = _file(root, "prompts.txt", BINARY)
    return ["generate", "--prompts", str(prompts), "--model", str(pipeline), "--out", str(root / OUT)]


def _generate_utf16_prompts(root, dataset, pipeline):
    prompts = _file(root, "prompts.txt", "a red circle\n".encode("utf-16-le"))  # valid UTF-8, with NULs
    return ["generate", "--prompts", str(prompts), "--model", str(pipeline), "--out", str(root / OUT)]


def _filter_config(content: str | bytes) -> Callable[[Path, Path, Path], list[str]]:
    def setup(root, dataset, pipeline):
        config = _file(root, "filter.yaml", content)
        return ["data", "filter", "--data", str(dataset), "--out", str(root / OUT), "--config", str(config)]

    return setup


def _info_binary_config(root, dataset, pipeline):
    folder = root / "unet"
    folder.mkdir()
    _file(folder, "config.json", BINARY)
    return ["info", "--model", str(folder)]


def _tile(command: str) -> Callable[[Path, Path, Path], list[str]]:
    def setup(root, dataset, pipeline):
        if command == "plan":
            return ["tile", "plan", "--sram", "16KiB", "--model", str(pipeline), "--size", "0"]
        return [
            "tile",
            "apply",
            "--model",
            str(pipeline),
            "--out",
            str(root / OUT),
            "--sram",
            "16KiB",
            "--size",
            "0",
        ]

    return setup


def _distill_config(content: str | bytes) -> Callable[[Path, Path, Path], list[str]]:
    return lambda root, dataset, pipeline: ["distill", "--config", str(_file(root, "kd.yaml", content))]


def _curate_apply_with_a_text_db(root, dataset, pipeline):
    db = _file(root, "queue.sqlite", "not a database\n")
    return ["data", "curate", "--data", str(dataset), "--out", str(root / OUT), "--apply", "--db", str(db)]


def _synthesize_with_nan_guidance(root, dataset, pipeline):
    config = _file(root, "synt.yaml", f"generator: {pipeline}\nguidance: .nan\n")
    return ["data", "synthesize", "--config", str(config), "--num-prompts", "2", "--out", str(root / OUT)]


def _quantize(*extra: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda root, dataset, pipeline: [
        "quantize",
        "--model",
        str(pipeline),
        "--out",
        str(root / OUT),
        *extra,
    ]


def _export(*extra: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda root, dataset, pipeline: [
        "export",
        "--model",
        str(pipeline),
        "--out",
        str(root / OUT),
        *extra,
    ]


def _demo(*extra: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda root, dataset, pipeline: [
        "demo",
        "--model",
        str(pipeline),
        "--out",
        str(root / OUT),
        *extra,
    ]


ONE_LINE_ERRORS = [
    *_corrupt_model_cases(),
    Case("generate --size 8", _generate("--size", "8"), "not a positive multiple of 16"),
    Case("generate --seed 2**70", _generate("--seed", str(2**70)), "out of range"),
    Case("generate --out <a file>", _generate_into_a_file, "is a file"),
    Case("generate --out <under a file>", _generate_under_a_file, "cannot create the output folder"),
    Case("generate --prompts <binary>", _generate_binary_prompts, "is not UTF-8 text"),
    Case("generate --prompts <UTF-16>", _generate_utf16_prompts, "NUL bytes"),
    Case("data filter --config <binary>", _filter_config(BINARY), "is not UTF-8 text"),
    Case("data filter --config <a YAML list>", _filter_config("- min_side: 3\n"), "must hold a mapping"),
    Case("info <config.json binary>", _info_binary_config, "is not UTF-8 text"),
    Case("tile plan --size 0", _tile("plan"), "not a positive multiple of 16"),
    Case("tile apply --size 0", _tile("apply"), "not a positive multiple of 16"),
    Case(
        "info --size 1000000",
        lambda r, d, p: ["info", "--model", "sd-v1.4", "--size", "1000000"],
        "too large",
    ),
    Case("toy eval: one prompt", _toy_eval(TOY_PROMPTS.splitlines()[0]), "at least 2 prompts"),
    Case("toy eval: empty prompt file", _toy_eval("\n# nothing\n"), "holds no prompts"),
    Case(
        "toy eval: missing prompt file",
        lambda r, d, p: ["toy", "eval", "--prompts", str(r / "no.txt")],
        "not found",
    ),
    Case(
        "toy eval --num-prompts 0", _toy_eval(None, "--num-prompts", "0"), "--num-prompts must be at least 1"
    ),
    Case(
        "toy eval --num-prompts -1",
        _toy_eval(None, "--num-prompts", "-1"),
        "--num-prompts must be at least 1",
    ),
    Case(
        "eval --toy: outside the grammar",
        _eval_toy("hello world\nhello again\n"),
        "not a shapes-world prompt",
    ),
    Case("eval --toy: no background", _eval_toy("a red circle\na blue square\n"), "names no background"),
    Case(
        "eval: a file_name that is no string",
        _eval_toy('{"text": "a red circle on a blue background", "file_name": 5}\n', "rows.jsonl"),
        "file_name string",
    ),
    Case("data curate --apply --db <not SQLite>", _curate_apply_with_a_text_db, "is not a review database"),
    Case("data score <missing folder>", lambda r, d, p: ["data", "score", str(r / "nosuch")], "not found"),
    # Silent wrong results before: black images, a 4 px model, 599 of 600 prompts, a typo accepted.
    Case("generate --guidance nan", _generate("--guidance", "nan"), "guidance must be a finite number"),
    Case("generate --guidance inf", _generate("--guidance", "inf"), "guidance must be a finite number"),
    Case("demo --guidance nan", _demo("--guidance", "nan"), "guidance must be a finite number"),
    Case("toy eval --guidance nan", _toy_eval(TOY_PROMPTS, "--guidance", "nan"), "finite number"),
    Case("eval --guidance inf", _eval_toy(TOY_PROMPTS, "prompts.txt", "--guidance", "inf"), "finite number"),
    Case("data synthesize guidance: .nan", _synthesize_with_nan_guidance, "guidance must be a finite number"),
    Case("quantize --calibrate --guidance nan", _quantize("--calibrate", "1", "--guidance", "nan"), "finite"),
    Case("export --report --guidance inf", _export("--report", "--guidance", "inf"), "finite number"),
    Case("export --size 7", _export("--size", "7"), "--size 7 is not a positive multiple of 16"),
    Case("export --size 0", _export("--size", "0"), "--size 0 is not a positive multiple of 16"),
    Case("quantize --keep-16bit nosuchlayer", _quantize("--keep-16bit", "nosuchlayer"), "names no Conv2d"),
    # Unbounded work: refused before anything is allocated.
    Case("generate --size 100000", _generate("--size", "100000"), "of memory, but"),
]

# The training stages read their config in edgefusion.train.config, which is not yet switched to
# edgefusion.inputs.read_config_mapping; strict, so that the switch shows here.
TRAINING_CONFIGS = [
    Case("distill --config <a YAML list>", _distill_config("- a\n- b\n"), "must hold a mapping"),
    Case("distill --config <binary>", _distill_config(BINARY), "is not UTF-8 text"),
]


def check_one_line_error(case: Case, root: Path, dataset: Path, pipeline: Path, capsys, monkeypatch) -> None:
    args = case.setup(root, dataset, pipeline)
    before = tree_hashes(root, skip=root / OUT)
    code, err = run_cli(args, capsys, monkeypatch)
    assert code == 1, err
    assert case.message in " ".join(err.split()) and "Traceback" not in err, err  # rich wraps lines
    assert err.lstrip().startswith("error:") and err.count("error:") == 1, err
    assert tree_hashes(root, skip=root / OUT) == before


@pytest.mark.parametrize("case", ONE_LINE_ERRORS, ids=[c.name for c in ONE_LINE_ERRORS])
def test_careless_input_is_one_line_error(case, tmp_path, dataset, pipeline, capsys, monkeypatch):
    check_one_line_error(case, tmp_path, dataset, pipeline, capsys, monkeypatch)


@pytest.mark.parametrize("case", TRAINING_CONFIGS, ids=[c.name for c in TRAINING_CONFIGS])
def test_training_configs_are_one_line_errors(case, tmp_path, dataset, pipeline, capsys, monkeypatch):
    check_one_line_error(case, tmp_path, dataset, pipeline, capsys, monkeypatch)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_output_is_one_line_error(tmp_path, dataset, pipeline, capsys, monkeypatch):
    def setup(root, dataset, pipeline):
        (root / "locked").mkdir()
        (root / "locked").chmod(0o555)
        return ["generate", "a red circle", "--model", str(pipeline), "--out", str(root / "locked" / OUT)]

    case = Case("generate --out <read-only>", setup, "cannot create the output folder")
    try:
        check_one_line_error(case, tmp_path, dataset, pipeline, capsys, monkeypatch)
    finally:
        (tmp_path / "locked").chmod(0o755)


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]


def test_generate_keeps_one_run_per_folder(tmp_path, pipeline, capsys, monkeypatch):
    """A re-run with fewer prompts must not leave images its log does not list: it is refused
    (nothing deleted) unless --overwrite, which deletes the numbered images it does not make."""
    out = tmp_path / OUT
    base = ["generate", "--model", str(pipeline), "--steps", "1", "--out", str(out)]
    assert run_cli([*base, "a red circle", "a blue square"], capsys, monkeypatch)[0] == 0
    (out / "notes.txt").write_text("mine")
    before = tree_hashes(tmp_path)
    code, err = run_cli([*base, "a red circle"], capsys, monkeypatch)
    assert code == 1 and "does not make (00001.png" in " ".join(err.split()), err
    assert tree_hashes(tmp_path) == before
    assert run_cli([*base, "a red circle", "--overwrite"], capsys, monkeypatch)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "generations.jsonl", "notes.txt"]
    assert [r["file_name"] for r in _log(out)] == ["00000.png"]
    kept = str(out / "00000.png")
    assert tree_hashes(tmp_path)[kept] == before[kept]  # the image the run makes is kept, not remade


def test_generate_memory_does_not_grow_with_n(tmp_path, pipeline, capsys, monkeypatch):
    """A million images are made in batches: interrupted after two, the run held only a batch."""
    import tracemalloc

    import torch

    import edgefusion.pipeline.sampling as sampling

    calls = []

    def fake_sampling(pipe, prompts, seeds, steps, guidance, batch_size=50, height=None, width=None):
        calls.append(len(prompts))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return torch.rand(len(prompts), 3, height, width)

    monkeypatch.setattr(sampling, "generate_tensors", fake_sampling)
    out = tmp_path / OUT
    args = ["generate", "a red circle", "--model", str(pipeline), "--n", str(10**6), "--out", str(out)]
    tracemalloc.start()
    try:
        code, err = run_cli(args, capsys, monkeypatch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 130, err
    assert calls == [8, 8, 8] and len(_log(out)) == 16
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # a list of 10**6 records alone takes more


def test_ingest_counts_images_in_subfolders(tmp_path, capsys, monkeypatch):
    """img2dataset shards images into subfolders: each is a sample, kept or rejected with a reason."""
    from PIL import Image

    from edgefusion.data.dataset import iter_rows, read_stats

    raw = tmp_path / "raw"
    for name in ("a.png", "00000/b.png", "00000/deeper/c.png"):
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), "red").save(raw / name)
    (raw / "00001").mkdir()
    (raw / "00001" / "d.png").write_bytes(b"not a png")
    out = tmp_path / OUT
    code, err = run_cli(["data", "ingest", "--data", str(raw), "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    stats = read_stats(out)
    assert (stats["samples_in"], stats["kept"], stats["rejected"]) == (4, 3, 1)
    assert sorted(r["id"] for r in iter_rows(out)) == ["00000_b", "00000_deeper_c", "a"]
    assert [r["id"] for r in iter_rows(out, "rejects.jsonl")] == ["00001_d"]
