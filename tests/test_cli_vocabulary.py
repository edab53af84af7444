"""One vocabulary across the command line: ``--model``, ``--out``, ``--size``, ``--prompts FILE|NAME``,
``--num-prompts``; the old spellings still work, hidden from ``--help``, with one warning each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from edgefusion.cli import _register_subcommands, app
from edgefusion.cli_options import prompts_or_count

#: Spellings the vocabulary replaced: only a hidden (deprecated) option may still answer to them.
OLD = frozenset({"--resolution", "--prompt-file", "--prompts-file", "--in", "--limit"})


def commands(command: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, command)`` of every click command under ``command``, groups included (typer
    carries its own copy of click, so commands are told apart by what they hold)."""
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from commands(sub, f"{path} {name}".strip())


@pytest.fixture(scope="module")
def cli() -> Any:
    _register_subcommands()
    return typer.main.get_command(app)


def test_no_command_exposes_an_old_spelling(cli):
    exposed = {}
    for path, command in commands(cli):
        for param in command.params:
            names = set(param.opts) | set(param.secondary_opts)
            if param.param_type_name == "option" and not param.hidden and names & OLD:
                exposed.setdefault(path, set()).update(names & OLD)
    assert exposed == {}


def test_no_usage_line_names_a_hidden_argument(cli):
    hidden = 0
    for path, command in commands(cli):
        context = typer.Context(command, info_name=f"edgefusion {path}".strip())
        usage = command.get_usage(context).split()
        for param in command.params:
            if param.param_type_name == "argument" and getattr(param, "hidden", False):
                hidden += 1
                named = [piece for piece in param.get_usage_pieces(context) if piece in usage]
                assert not named, (path, usage)
    assert hidden  # the old positionals are there, and --help does not show them


def test_every_hidden_spelling_says_what_replaces_it(cli):
    hidden = [(path, p) for path, c in commands(cli) for p in c.params if getattr(p, "hidden", False)]
    assert hidden  # the old spellings are there, hidden
    for path, param in hidden:
        assert param.help and param.help.startswith("Deprecated: use --"), (path, param.opts)


def test_old_spellings_still_work_and_warn_once():
    _register_subcommands()
    old = CliRunner().invoke(app, ["info", "sd-v1.4", "--resolution", "256", "--json"])
    new = CliRunner().invoke(app, ["info", "--model", "sd-v1.4", "--size", "256", "--json"])
    assert old.exit_code == 0 and new.exit_code == 0, old.output + new.output
    assert json.loads(old.stdout) == json.loads(new.stdout)
    assert json.loads(new.stdout)["resolution"] == 256
    assert old.stderr.count("warning: --resolution is deprecated; use --size") == 1
    assert old.stderr.count("warning: a positional SRC is deprecated; use --model") == 1
    assert new.stderr == ""


def test_counts_are_num_prompts_and_limit_is_the_old_spelling(monkeypatch):
    import edgefusion.decoder.compare

    _register_subcommands()
    seen = {}
    monkeypatch.setattr(
        edgefusion.decoder.compare, "compare_decoders", lambda *a: seen.setdefault("n", a[2].num_prompts)
    )
    old = CliRunner().invoke(app, ["decoder", "compare", "--vae", "v", "--limit", "3"])
    assert old.exit_code == 0, old.output
    assert seen["n"] == 3 and old.stderr.count("warning: --limit is deprecated; use --num-prompts") == 1


def test_a_renamed_required_option_is_still_required():
    _register_subcommands()
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code != 0
    assert "Missing option '--model'" in str(result.exception) + result.output


def test_prompts_names_a_file_or_set_and_a_bare_number_is_the_old_count(tmp_path, capsys):
    assert prompts_or_count("val", 20) == (Path("val"), 20)
    assert prompts_or_count(None, 20) == (None, 20)
    assert prompts_or_count("7", 20) == (None, 7)
    assert "warning: --prompts 7 is deprecated; use --num-prompts 7" in capsys.readouterr().err
