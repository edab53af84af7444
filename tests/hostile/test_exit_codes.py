"""Exit codes a shell can rely on: 2 with typer's usage message for a usage error, 130 with a
line saying how to resume for Ctrl-C, never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from test_paths import run_cli

USAGE_ERRORS = [
    ([], "Usage: "),
    (["nosuch"], "No such command 'nosuch'"),
    (["generate", "--n", "abc", "a red circle"], "Invalid value for '--n'"),
    (["info"], "Missing option '--model'"),
    (["generate", "--no-such-flag"], "No such option"),
]


@pytest.mark.parametrize(
    ("args", "message"), USAGE_ERRORS, ids=[" ".join(a) or "(none)" for a, _ in USAGE_ERRORS]
)
def test_usage_errors_exit_2_with_the_usage_message(args, message, capsys, monkeypatch):
    code, output = run_cli(args, capsys, monkeypatch)
    assert code == 2
    assert message in output and "Traceback" not in output


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    out = tmp_path / "data"
    command = [sys.executable, "-m", "edgefusion.cli", "toy", "data", "--n", "200000", "--out", str(out)]
    # A job started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: give the child the default, as a terminal would.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 600  # generous: a loaded 2-core machine can take minutes
    while not any(tmp_path.iterdir()) and time.time() < deadline:  # wait for its staging folder
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert "interrupted: run the same command again to resume" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no half-written dataset, no staging folder left behind
