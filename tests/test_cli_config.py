"""``--config FILE`` and trailing ``key=value`` settings on ``generate``, ``quantize``, ``export``,
``eval`` and ``bench``: the file holds the command's options by name, the settings override it,
options typed on the command line win, and a bad key or value is an error naming it and the file.

Argument handling only: each command's work function is replaced by one that records what the
command passed it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgefusion.cli import _register_subcommands, app, generate_command
from edgefusion.errors import EdgefusionError


def _run(*args: str) -> Any:
    _register_subcommands()
    return CliRunner().invoke(app, [str(a) for a in args])


def _config(tmp_path: Path, **options: Any) -> Path:
    path = tmp_path / "options.yaml"
    path.write_text(yaml.safe_dump(options), encoding="utf-8")
    return path


@pytest.fixture
def calls(monkeypatch) -> dict[str, Any]:
    """Each command's work function, recording its arguments instead of working."""
    import edgefusion.bench.latency
    import edgefusion.eval.cli
    import edgefusion.eval.protocol
    import edgefusion.export.onnx
    import edgefusion.generate
    import edgefusion.quant.quantize

    seen: dict[str, Any] = {}

    def generate(texts, model, **kwargs):
        seen["generate"] = {"prompts": texts, "model": model, **kwargs}
        return [{"scheduler": "lcm", "steps": kwargs["steps"] or 2, "guidance": 1.0}]

    def evaluate(config):
        seen["eval"] = config
        config.out.mkdir(parents=True, exist_ok=True)
        (config.out / "metrics.md").write_text("metrics\n")

    monkeypatch.setattr(edgefusion.generate, "generate", generate)
    monkeypatch.setattr(edgefusion.eval.protocol, "evaluate", evaluate)
    monkeypatch.setattr(edgefusion.eval.cli, "toy_evaluation", lambda *a: seen.update({"toy eval": a}))
    monkeypatch.setattr(edgefusion.bench.latency, "bench", lambda config: seen.update(bench=config) or [])
    monkeypatch.setattr(
        edgefusion.quant.quantize, "quantize_pipeline", lambda *a, **k: seen.update(quantize=(a, k))
    )
    monkeypatch.setattr(edgefusion.export.onnx, "export_pipeline", lambda *a, **k: seen.update(export=(a, k)))
    return seen


def test_generate_takes_its_options_and_prompts_from_a_file(tmp_path, calls):
    config = _config(tmp_path, prompt=["a red circle"], model="toy:teacher", steps=4, n=2, size=64)
    result = _run("generate", "--config", config, f"out={tmp_path / 'gen'}", "guidance=2")
    assert result.exit_code == 0, result.output
    seen = calls["generate"]
    assert seen["prompts"] == ["a red circle"] and seen["model"] == "toy:teacher"
    assert (seen["steps"], seen["n"], seen["size"], seen["guidance"]) == (4, 2, 64, 2.0)
    assert seen["out"] == tmp_path / "gen" and isinstance(seen["out"], Path)


def test_options_on_the_command_line_win_over_the_file_and_settings(tmp_path, calls):
    config = _config(tmp_path, prompt=["from the file"], steps=4, seed=7, out=str(tmp_path / "gen"))
    result = _run("generate", "a typed prompt", "--config", config, "--steps", "3", "seed=9")
    assert result.exit_code == 0, result.output
    seen = calls["generate"]
    assert seen["prompts"] == ["a typed prompt"] and seen["steps"] == 3 and seen["seed"] == 9


def test_an_unknown_key_or_a_bad_value_names_it_and_the_file(tmp_path, calls):
    config = _config(tmp_path, stepz=2)
    result = _run("generate", "--config", config)
    assert isinstance(result.exception, EdgefusionError)
    assert str(config) in str(result.exception) and "unknown generate option stepz" in str(result.exception)
    result = _run("generate", "--config", _config(tmp_path, steps="two"))
    assert "steps must be int" in str(result.exception) and "options.yaml" in str(result.exception)
    result = _run("generate", "a prompt", "n=many")
    assert "n must be int, got 'many'" in str(result.exception)
    assert "generate" not in calls


def test_without_a_config_a_command_runs_as_before(tmp_path, calls):
    result = _run("generate", "a red circle", "--out", tmp_path / "gen")
    assert result.exit_code == 0, result.output
    assert calls["generate"]["prompts"] == ["a red circle"] and calls["generate"]["steps"] is None


def test_a_prompt_with_an_equals_sign_stays_a_prompt(tmp_path, calls):
    prompts = ["E=mc2 on a blackboard", "x=1", "a red circle"]
    result = _run("generate", *prompts, "steps=3", "--out", tmp_path / "gen")
    assert result.exit_code == 0, result.output
    assert calls["generate"]["prompts"] == prompts and calls["generate"]["steps"] == 3


def test_quantize_reads_its_required_options_from_a_file(tmp_path, calls):
    config = _config(tmp_path, model="toy:edgefusion", out=str(tmp_path / "q"), keep="")
    result = _run("quantize", "--config", config, "activation_dtype=bfloat16")
    assert result.exit_code == 0, result.output
    (model, out, w8a16), _ = calls["quantize"]
    assert (model, out) == ("toy:edgefusion", tmp_path / "q")
    assert w8a16.activation_dtype == "bfloat16" and w8a16.skip == ()
    missing = _run("quantize", "--config", _config(tmp_path, model="toy:edgefusion"))
    assert missing.exit_code == 2 and "Missing option '--out'" in missing.output


def test_export_takes_a_file_and_trailing_settings(tmp_path, calls):
    config = _config(tmp_path, model="toy:edgefusion", precision="fp16")
    result = _run("export", "--config", config, "size=64", "--out", tmp_path / "onnx")
    assert result.exit_code == 0, result.output
    (model, out, precision), options = calls["export"]
    assert (model, out, precision, options["height"]) == ("toy:edgefusion", tmp_path / "onnx", "fp16", 64)


def test_eval_takes_a_file_and_keeps_its_stats_subcommand(tmp_path, calls):
    config = _config(tmp_path, prompts="val", model="toy:edgefusion", num_prompts=5)
    result = _run("eval", "--config", config, "steps=2", "--json")
    assert result.exit_code == 0, result.output
    model, prompts, steps, *_, num_prompts, renders, as_json = calls["toy eval"]
    assert (model, prompts, steps, num_prompts, as_json) == ("toy:edgefusion", Path("val"), 2, 5, True)
    result = _run("eval", "--config", config, f"out={tmp_path / 'ev'}", "n=2")
    assert result.exit_code == 0, result.output
    assert calls["eval"].n == 2 and calls["eval"].limit == 5 and calls["eval"].out == tmp_path / "ev"
    stats = _run("eval", "stats", "--help")
    assert stats.exit_code == 0 and "FID statistics" in stats.output


def test_bench_takes_models_and_steps_from_a_file(tmp_path, calls):
    config = _config(tmp_path, models=["bk-tiny"], steps=[2, 4], backend=["torch-bf16"])
    result = _run("bench", "--config", config, "--size", "256", "end_to_end=false", "--json")
    assert result.exit_code == 0, result.output
    seen = calls["bench"]
    assert (seen.models, seen.resolution, seen.steps, seen.backends) == (
        ["bk-tiny"],
        256,
        [2, 4],
        ["torch-bf16"],
    )
    assert seen.end_to_end is False and json.loads(result.stdout) == []
    typed = _run("bench", "sd-v1.4", "--config", config, "--json")
    assert typed.exit_code == 0 and calls["bench"].models == ["sd-v1.4"] and calls["bench"].steps == [2, 4]
    assert _run("bench", "--json").exit_code == 2


def test_a_command_s_options_are_a_typed_dataclass():
    options = generate_command.options
    assert options.__name__ == "GenerateOptions"
    assert options().steps is None and options().n == 1 and options().model == "toy:edgefusion"
    assert options.__dataclass_fields__["size"].type == int | None


def test_compress_and_tile_take_a_file_and_settings(tmp_path):
    """The remaining stages on the same mechanism: real runs on the built-in configs (no weights)."""
    config = _config(tmp_path, model="sd-v1.4", variant="tiny")
    result = _run("compress", "--config", config, f"out={tmp_path / 'tiny'}")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny" / "config.json").is_file()
    plan = _config(tmp_path, sram="2MiB", model="sd-v1.4", size=256)
    result = _run("tile", "plan", "--config", plan, "variant=tiny", "--json")
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)  # BK-Tiny's 18 attention layers (SD-v1.4 has 32), at 256 px
    assert len(layers) == 18 and max(layer["q_len"] for layer in layers) == (256 // 8) ** 2
    result = _run("tile", "plan", "--config", _config(tmp_path, sram="2MiB", sise=256))
    assert "unknown tile plan option sise" in str(result.exception)
