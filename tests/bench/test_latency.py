"""Bench: record schema, warm-up excluded, medians over runs, composed totals, clear backend errors."""

import json
import statistics
import sys

import pytest
from typer.testing import CliRunner

from edgefusion.arch.counting import count_unet_parameters
from edgefusion.bench import latency
from edgefusion.bench.latency import BenchConfig, bench, time_runs
from edgefusion.bench.models import unet_config
from edgefusion.errors import EdgefusionError

REQUIRED = {"model", "backend", "component", "median_s"}


def test_warmup_runs_are_not_timed_and_each_run_is_timed_once():
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # start/stop pairs of the 3 timed runs
    calls = []
    times = time_runs(lambda: calls.append(1), warmup=2, repeats=3, clock=lambda: next(ticks))
    assert len(calls) == 5 and times == [1.0, 3.0, 2.0]
    assert statistics.median(times) == 2.0


@pytest.mark.parametrize("lcm", [False, True])
def test_records_have_the_schema_medians_and_composed_totals(monkeypatch, micro_parts, lcm):
    monkeypatch.setattr(latency, "build_parts", lambda name: micro_parts(lcm))
    config = BenchConfig(
        ["micro"], resolution=32, steps=[4, 1], backends=["torch-fp32", "torch-bf16"], warmup=1, repeats=3
    )
    config.end_to_end = False
    records = bench(config)
    assert all(REQUIRED <= r.keys() for r in records)
    for backend in ("torch-fp32", "torch-bf16"):
        rows = {(r["component"], r.get("steps")): r for r in records if r["backend"] == backend}
        assert set(rows) == {
            ("text_encoder", None),
            ("unet_step", None),
            ("vae_decoder", None),
            ("total", 4),
            ("total", 1),
        }
        for c in ("text_encoder", "unet_step", "vae_decoder"):
            assert len(rows[c, None]["runs_s"]) == 3
            assert rows[c, None]["median_s"] == statistics.median(rows[c, None]["runs_s"])
            assert rows[c, None]["peak_rss_mib"] > 0 and rows[c, None]["threads"] >= 1
        parts = [rows[c, None]["median_s"] for c in ("text_encoder", "unet_step", "vae_decoder")]
        assert rows["total", 4]["median_s"] == pytest.approx(parts[0] + 4 * parts[1] + parts[2])
        assert rows["total", 4]["speedup"] == 1.0
        assert rows["total", 1]["speedup"] > 1.0
        # CFG doubles the batch for a plain U-Net; an LCM U-Net embeds guidance instead.
        assert rows["unet_step", None]["cfg"] is (not lcm)
        assert rows["unet_step", None]["batch"] == (1 if lcm else 2)


def test_a_missing_or_unknown_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(EdgefusionError, match="onnxruntime is not installed"):
        bench(BenchConfig(["toy:bk-tiny-adv"], backends=["onnxruntime"]))
    with pytest.raises(EdgefusionError, match="unknown backend 'tensorrt'"):
        bench(BenchConfig(["toy:bk-tiny-adv"], backends=["tensorrt"]))


def test_builtin_edgefusion_tiny_is_bk_tiny_with_the_guidance_embedding():
    tiny, edgefusion = unet_config("bk-tiny"), unet_config("edgefusion-tiny")
    assert edgefusion == tiny | {"time_cond_proj_dim": 256}
    assert count_unet_parameters(tiny) == 323_384_964
    assert count_unet_parameters(edgefusion) == 323_384_964 + 256 * 320  # cond_proj, no bias


def test_cli_json_on_a_shipped_toy_model():
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "toy:bk-tiny-adv",
            "--size",
            "64",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--no-end-to-end",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert {r["component"] for r in records} == {"text_encoder", "unet_step", "vae_decoder", "total"}
    assert all(REQUIRED <= r.keys() and r["model"] == "toy:bk-tiny-adv" for r in records)
