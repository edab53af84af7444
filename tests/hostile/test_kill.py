"""A run killed outright (SIGKILL: no handler runs, nothing is cleaned up) and run again ends
exactly where an uninterrupted run ends: the same files, byte for byte, and a log that lists
each of them once. SIGINT is covered in test_exit_codes.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from test_paths import run_cli, tree_hashes

from edgefusion.toy.dataset import write_toy_dataset


def kill_when(command: list[str], ready: Callable[[], bool], timeout: float = 600) -> None:
    """Run ``edgefusion COMMAND`` in a process and SIGKILL it as soon as ``ready()`` holds.
    ``timeout`` is generous: on a loaded 2-core machine the first image can take minutes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "edgefusion.cli", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, f"finished before it could be killed: {process.stderr.read()}"
        assert time.time() < deadline, "never reached the point to kill it at"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def relative_hashes(folder: Path) -> dict[str, str]:
    return {str(Path(k).relative_to(folder)): v for k, v in tree_hashes(folder).items()}


def test_a_killed_ingest_resumes_to_the_uninterrupted_output(tmp_path, capsys, monkeypatch):
    source = write_toy_dataset(tmp_path / "source", n=400, size=32, progress=False)
    options = ["--chunk-size", "16", "--workers", "1"]
    out = tmp_path / "out"
    progress = tmp_path / ".out.partial" / ".progress"
    kill_when(
        ["data", "ingest", "--in", str(source), "--out", str(out), *options],
        lambda: progress.is_dir() and len(list(progress.iterdir())) >= 2,
    )
    assert not out.exists()  # killed mid-run: nothing published yet
    assert (
        run_cli(["data", "ingest", "--in", str(source), "--out", str(out), *options], capsys, monkeypatch)[0]
        == 0
    )
    reference = tmp_path / "reference"
    assert (
        run_cli(["data", "ingest", "--in", str(source), "--out", str(reference)], capsys, monkeypatch)[0] == 0
    )

    resumed, straight = relative_hashes(out), relative_hashes(reference)
    # Run statistics (timings, the resume count) may differ; every sample file and row may not.
    resumed.pop("stats.json"), straight.pop("stats.json")
    assert resumed == straight and len(resumed) > 400
    assert not (tmp_path / ".out.partial").exists()


def test_a_killed_generate_resumes_to_the_uninterrupted_images(tmp_path, pipeline, capsys, monkeypatch):
    args = ["generate", "--model", str(pipeline), "--n", "24", "--steps", "10", "--batch-size", "1"]
    out, reference = tmp_path / "out", tmp_path / "reference"
    kill_when([*args, "--out", str(out), "a red circle"], lambda: len(list(out.glob("*.png"))) >= 3)
    code, output = run_cli([*args, "--out", str(out), "a red circle"], capsys, monkeypatch)
    assert code == 0, output
    assert run_cli([*args, "--out", str(reference), "a red circle"], capsys, monkeypatch)[0] == 0

    assert relative_hashes(out) == relative_hashes(reference)  # PNGs and generations.jsonl alike
    logged = [json.loads(line)["file_name"] for line in (out / "generations.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(p.name for p in out.glob("*.png")) and len(logged) == 24
