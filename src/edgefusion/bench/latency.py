"""Latency and peak memory per component (EdgeFusion Table 7's encoder / U-Net / decoder / total).

Each component (text encoder, one U-Net call, VAE decoder) runs ``warmup`` times untimed, then
``repeats`` timed runs; we report the median. The total for N steps is composed from those
medians, ``text_encoder + N * unet_step + vae_decoder``, so one measurement gives Table 5's
1-to-25-step rows; scheduler arithmetic, which is negligible next to these calls, is left out.
With classifier-free guidance (default for non-LCM U-Nets) the text encoder and the U-Net run on a
batch of 2, as diffusers does; an LCM U-Net embeds the guidance scale and runs a batch of 1.

Peak memory is the process's resident-set high-water mark (Linux ``VmHWM``), reset before each
component where the kernel allows it (``/proc/self/clear_refs``): it includes every loaded weight
and the runtime, i.e. what the process needs to run that component.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from edgefusion.bench.models import PipelineParts, build_parts
from edgefusion.errors import EdgefusionError
from edgefusion.limits import check_image_size, size_factor

BACKENDS = ("torch-fp32", "torch-bf16", "onnxruntime")
COMPONENTS = ("text_encoder", "unet_step", "vae_decoder")
_TORCH_DTYPES = {"torch-fp32": torch.float32, "torch-bf16": torch.bfloat16}


@dataclass
class BenchConfig:
    models: list[str]
    resolution: int = 512
    steps: list[int] = field(default_factory=lambda: [25])
    backends: list[str] = field(default_factory=lambda: ["torch-fp32"])
    warmup: int = 1
    repeats: int = 3
    cfg: bool | None = None  # None: CFG for non-LCM U-Nets, as each is meant to be sampled
    threads: int | None = None
    work_dir: Path = Path("outputs/bench")  # ONNX exports of built-in architectures


def time_runs(run: Callable[[], object], warmup: int, repeats: int, clock=time.perf_counter) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``run``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return times


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the mark then covers the process's whole life
        pass


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def check_backend(backend: str) -> None:
    """A clear error for an unknown backend or one whose runtime is not installed."""
    if backend not in BACKENDS:
        raise EdgefusionError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise EdgefusionError(
                "backend onnxruntime is not installed: `pip install onnx onnxruntime`, "
                "or use torch-fp32 / torch-bf16"
            ) from None


def component_inputs(parts: PipelineParts, resolution: int, cfg: bool) -> dict[str, dict[str, torch.Tensor]]:
    """Random inputs of each component, named as in the ONNX export (fp32; cast by the backend)."""
    check_image_size(resolution, size_factor(parts.unet.config, parts.vae_scale_factor), "resolution")
    latent = resolution // parts.vae_scale_factor
    batch = 2 if cfg else 1
    width = parts.unet.config.cross_attention_dim
    width = width[0] if isinstance(width, list | tuple) else width
    gen = torch.Generator().manual_seed(0)
    unet = {
        "sample": torch.randn(batch, parts.unet.config.in_channels, latent, latent, generator=gen),
        "timestep": torch.full((batch,), 999),
        "encoder_hidden_states": torch.randn(batch, parts.text_length, width, generator=gen),
    }
    if parts.lcm:
        unet["timestep_cond"] = torch.randn(batch, parts.unet.config.time_cond_proj_dim, generator=gen)
    latent_channels = parts.vae.config.latent_channels
    return {
        "text_encoder": {
            "input_ids": torch.randint(parts.vocab_size, (batch, parts.text_length), generator=gen)
        },
        "unet_step": unet,
        "vae_decoder": {"latent_sample": torch.randn(1, latent_channels, latent, latent, generator=gen)},
    }


def torch_runners(
    parts: PipelineParts, inputs: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype
) -> dict[str, Callable[[], object]]:
    """One callable per component, with modules and float inputs cast to ``dtype`` (in place)."""
    from edgefusion.pipeline.load import cast_

    for module in (parts.text_encoder, parts.unet, parts.vae):
        cast_(module, dtype)
    cast = {
        c: {k: v.to(dtype) if v.is_floating_point() else v for k, v in x.items()} for c, x in inputs.items()
    }
    unet = cast["unet_step"]
    return {
        "text_encoder": lambda: parts.text_encoder(**cast["text_encoder"]),
        "unet_step": lambda: parts.unet(
            unet["sample"],
            unet["timestep"],
            unet["encoder_hidden_states"],
            timestep_cond=unet.get("timestep_cond"),
        ),
        "vae_decoder": lambda: parts.vae.decode(cast["vae_decoder"]["latent_sample"]),
    }


def measure_components(
    runners: dict[str, Callable[[], object]], warmup: int, repeats: int, bar: tqdm
) -> dict[str, tuple[list[float], float]]:
    """(run times, peak RSS MiB) per component."""
    results = {}
    with torch.inference_mode():
        for component in COMPONENTS:
            bar.set_postfix_str(component)
            reset_peak_rss()
            times = time_runs(runners[component], warmup, repeats)
            results[component] = (times, peak_rss_mib())
            bar.update()
    return results


def compose_totals(records: list[dict], steps: list[int]) -> list[dict]:
    """Total-latency records for each step count, composed from one model/backend's components."""
    median = {r["component"]: r["median_s"] for r in records}
    base = {
        k: v
        for k, v in records[0].items()
        if k not in ("component", "median_s", "runs_s", "peak_rss_mib", "batch")
    }
    return [
        base
        | {
            "component": "total",
            "steps": n,
            "median_s": median["text_encoder"] + n * median["unet_step"] + median["vae_decoder"],
            "composed": "text_encoder + steps * unet_step + vae_decoder",
            "peak_rss_mib": max(r["peak_rss_mib"] for r in records),
        }
        for n in steps
    ]


def add_speedups(records: list[dict]) -> None:
    """``speedup`` of every total against the first model's total at its most steps, per backend."""
    totals = [r for r in records if r["component"] == "total"]
    for backend in {r["backend"] for r in totals}:
        rows = [r for r in totals if r["backend"] == backend]
        reference = max((r for r in rows if r["model"] == rows[0]["model"]), key=lambda r: r["steps"])
        for r in rows:
            r["speedup"] = reference["median_s"] / r["median_s"]
            r["speedup_vs"] = f"{reference['model']} @ {reference['steps']} steps"


def bench(config: BenchConfig) -> list[dict]:
    """Records of ``model``, ``backend``, ``component``, ``median_s`` (and runs, memory, settings)."""
    for backend in config.backends:
        check_backend(backend)
    if config.warmup < 0 or config.repeats < 1 or any(n < 1 for n in config.steps):
        raise EdgefusionError("need --warmup >= 0, --repeats >= 1 and every --steps >= 1")
    if config.threads:
        torch.set_num_threads(config.threads)
    # ONNX is exported from fp32 weights, so it runs before a torch backend casts them.
    backends = sorted(dict.fromkeys(config.backends), key=("onnxruntime", "torch-fp32", "torch-bf16").index)
    records: list[dict] = []
    bar = tqdm(total=len(config.models) * len(backends) * len(COMPONENTS), desc="bench")
    for name in config.models:
        parts = build_parts(name)
        cfg = not parts.lcm if config.cfg is None else config.cfg
        inputs = component_inputs(parts, config.resolution, cfg)
        for backend in backends:
            bar.set_description(f"{name} {backend}")
            if backend == "onnxruntime":
                from edgefusion.bench.onnx import onnx_runners

                runners = onnx_runners(name, parts, inputs, config.work_dir)
            else:
                runners = torch_runners(parts, inputs, _TORCH_DTYPES[backend])
            measured = measure_components(runners, config.warmup, config.repeats, bar)
            rows = [
                {
                    "model": name,
                    "backend": backend,
                    "component": component,
                    "median_s": statistics.median(times),
                    "runs_s": times,
                    "peak_rss_mib": peak,
                    "resolution": config.resolution,
                    "cfg": cfg,
                    "batch": inputs["unet_step"]["sample"].shape[0] if component != "vae_decoder" else 1,
                    "warmup": config.warmup,
                    "repeats": config.repeats,
                    "threads": torch.get_num_threads(),
                }
                for component, (times, peak) in measured.items()
            ]
            records += rows + compose_totals(rows, config.steps)
        del parts
    bar.close()
    add_speedups(records)
    return records
