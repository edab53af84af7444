"""Latency and peak memory per component (EdgeFusion Table 7's encoder / U-Net / decoder / total).

Each component (text encoder, one U-Net call, VAE decoder) runs ``warmup`` times untimed, then
``repeats`` timed runs; we report the median. The total for N steps is composed from those
medians, ``text_encoder + N * unet_step + vae_decoder``, so one measurement gives Table 5's
1-to-25-step rows; scheduler arithmetic, which is negligible next to these calls, is left out.
With classifier-free guidance (default for non-LCM U-Nets) the text encoder and the U-Net run on a
batch of 2, as diffusers does; an LCM U-Net embeds the guidance scale and runs a batch of 1.

With another decoder (``vae``: ``taesd``, an ``AutoencoderTiny`` with TAESD's default config and
seeded random weights, or a decoder folder) it is timed too, as ``tiny_decoder``, and the totals
and the end-to-end calls decode with it.

Beside each composed total stand the end-to-end figures of :mod:`~edgefusion.bench.end_to_end`:
whole ``generate`` calls at that step count (median of ``repeats``), the first call (load,
export or compile, first image) with cold and with warm caches, and their peak memory.

Peak memory is the process's resident-set high-water mark (Linux ``VmHWM``), reset before each
component where the kernel allows it (``/proc/self/clear_refs``): it includes every loaded weight
and the runtime, i.e. what the process needs to run that component.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from edgefusion.bench.backends import BACKENDS, RUN_ORDER, check_backend
from edgefusion.bench.measure import bind, peak_rss_mib, reset_peak_rss, time_runs
from edgefusion.bench.models import PipelineParts, build_parts
from edgefusion.errors import EdgefusionError
from edgefusion.limits import check_image_size, size_factor

__all__ = ["BACKENDS", "BenchConfig", "bench", "check_backend"]

COMPONENTS = ("text_encoder", "unet_step", "vae_decoder")
#: The decoder given with ``--vae``, timed beside the model's own.
TINY_DECODER = "tiny_decoder"


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
    work_dir: Path = Path("outputs/bench")  # saved built-in pipelines, ONNX exports, scratch
    vae: str | None = None  # "taesd" or a decoder folder: timed, and used by totals and end-to-end
    end_to_end: bool = True


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
    decoder = {
        "latent_sample": torch.randn(1, parts.vae.config.latent_channels, latent, latent, generator=gen)
    }
    inputs = {
        "text_encoder": {
            "input_ids": torch.randint(parts.vocab_size, (batch, parts.text_length), generator=gen)
        },
        "unet_step": unet,
        "vae_decoder": decoder,
    }
    if parts.tiny_decoder is not None:
        inputs[TINY_DECODER] = decoder
    return inputs


def _decode(decoder: torch.nn.Module) -> Callable[..., torch.Tensor]:
    return lambda latent_sample: decoder.decode(latent_sample, return_dict=False)[0]


def torch_runners(
    parts: PipelineParts,
    inputs: dict[str, dict[str, torch.Tensor]],
    dtype: torch.dtype,
    compiled: bool = False,
) -> dict[str, Callable[[], object]]:
    """One callable per component, with modules and float inputs cast to ``dtype`` (in place).

    ``compiled``: as the ``torch-compile`` backend runs them: weights in fp32, the U-Net and the
    decoders compiled (:func:`~edgefusion.pipeline.load.cpu_compiled`, under ``dtype``'s autocast),
    the text encoder as it is.
    """
    from edgefusion.pipeline.load import cast_, cpu_compiled

    weights = torch.float32 if compiled else dtype
    decoders = {"vae_decoder": parts.vae, TINY_DECODER: parts.tiny_decoder}
    decoders = {c: d for c, d in decoders.items() if d is not None}
    for module in (parts.text_encoder, parts.unet, *decoders.values()):
        cast_(module, weights)
    calls = {"text_encoder": parts.text_encoder, "unet_step": parts.unet}
    calls |= {c: _decode(d) for c, d in decoders.items()}
    if compiled:
        # Compiled code is cached per Python function with a small limit (8 variants), beyond which
        # dynamo silently runs eagerly: start afresh for each model and compute type.
        torch._dynamo.reset()
        calls |= {c: cpu_compiled(calls[c], dtype) for c in ("unet_step", *decoders)}
    cast = {
        c: {k: v.to(weights) if v.is_floating_point() else v for k, v in x.items()} for c, x in inputs.items()
    }
    return {c: bind(call, cast[c]) for c, call in calls.items() if c in cast}


def backend_runners(
    backend: str, name: str, parts: PipelineParts, inputs: dict, config: BenchConfig, vae: Path | None
) -> dict[str, Callable[[], object]]:
    """The component runners of ``backend`` (graph backends export ``name`` first, once)."""
    runtime, dtype = BACKENDS[backend]
    if runtime in ("onnxruntime", "openvino"):
        from edgefusion.bench.onnx import graph_files, onnx_runners, openvino_runners

        files = graph_files(name, parts, config.work_dir, vae)
        if runtime == "onnxruntime":
            return onnx_runners(files, inputs)
        return openvino_runners(files, inputs, dtype)
    return torch_runners(parts, inputs, dtype, compiled=runtime == "torch-compile")


def measure_components(
    runners: dict[str, Callable[[], object]], warmup: int, repeats: int, bar: tqdm
) -> dict[str, tuple[list[float], float]]:
    """(run times, peak RSS MiB) per component."""
    results = {}
    with torch.inference_mode():
        for component, run in runners.items():
            bar.set_postfix_str(component)
            reset_peak_rss()
            times = time_runs(run, warmup, repeats)
            results[component] = (times, peak_rss_mib())
            bar.update()
    return results


def compose_totals(records: list[dict], steps: list[int]) -> list[dict]:
    """Total-latency records for each step count, composed from one model/backend's components;
    with a tiny decoder timed, the totals decode with it."""
    median = {r["component"]: r["median_s"] for r in records}
    decoder = TINY_DECODER if TINY_DECODER in median else "vae_decoder"
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
            "median_s": median["text_encoder"] + n * median["unet_step"] + median[decoder],
            "composed": f"text_encoder + steps * unet_step + {decoder}",
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


def tiny_decoder_folder(vae: str | None, parts: PipelineParts, work_dir: Path) -> Path | None:
    """The folder of the ``--vae`` decoder, loaded into ``parts.tiny_decoder``; ``taesd`` is an
    ``AutoencoderTiny`` with TAESD's default config and seeded random weights (latency does not
    depend on their values), saved under ``work_dir`` on first use."""
    from edgefusion.pipeline.vae import decoder_folder, decoder_scale_factor, load_decoder

    if vae is None:
        return None
    if vae == "taesd":
        folder = Path(work_dir) / "taesd-random"
        if not (folder / "config.json").is_file():
            _save_random_taesd(folder)
    else:
        folder = decoder_folder(vae)
    decoder = load_decoder(folder)
    wanted = (parts.vae.config.latent_channels, parts.vae_scale_factor)
    if (decoder.config.latent_channels, decoder_scale_factor(decoder)) != wanted:
        raise EdgefusionError(
            f"--vae {vae} reads {decoder.config.latent_channels}-channel latents upsampled "
            f"{decoder_scale_factor(decoder)}x, but this model's are {wanted[0]}-channel, {wanted[1]}x: "
            "use a decoder made for its VAE"
        )
    parts.tiny_decoder = decoder
    return folder


def _save_random_taesd(folder: Path) -> None:
    from diffusers import AutoencoderTiny

    from edgefusion.atomic import atomic_output_dir

    with torch.random.fork_rng(devices=[]), atomic_output_dir(folder, overwrite=True) as staging:
        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(staging)


def bench(config: BenchConfig) -> list[dict]:
    """Records of ``model``, ``backend``, ``component``, ``median_s`` (and runs, memory, settings);
    the ``total`` records carry the end-to-end figures unless ``config.end_to_end`` is off."""
    for backend in config.backends:
        check_backend(backend)
    if config.warmup < 0 or config.repeats < 1 or any(n < 1 for n in config.steps):
        raise EdgefusionError("need --warmup >= 0, --repeats >= 1 and every --steps >= 1")
    if config.threads:
        torch.set_num_threads(config.threads)
    backends = sorted(dict.fromkeys(config.backends), key=RUN_ORDER.index)
    components = len(COMPONENTS) + (config.vae is not None)
    records: list[dict] = []
    bar = tqdm(total=len(config.models) * len(backends) * components, desc="bench")
    for name in config.models:
        parts = build_parts(name)
        vae = tiny_decoder_folder(config.vae, parts, config.work_dir)
        cfg = not parts.lcm if config.cfg is None else config.cfg
        inputs = component_inputs(parts, config.resolution, cfg)
        if config.end_to_end:
            from edgefusion.bench.onnx import pipeline_folder

            pipeline_folder(name, parts, config.work_dir)  # saved from fp32 weights, before any cast
        for backend in backends:
            bar.set_description(f"{name} {backend}")
            runners = backend_runners(backend, name, parts, inputs, config, vae)
            measured = measure_components(runners, config.warmup, config.repeats, bar)
            del runners
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
                    "batch": inputs["unet_step"]["sample"].shape[0] if component in COMPONENTS[:2] else 1,
                    "warmup": config.warmup,
                    "repeats": config.repeats,
                    "threads": torch.get_num_threads(),
                    "vae": config.vae,
                }
                for component, (times, peak) in measured.items()
            ]
            totals = compose_totals(rows, config.steps)
            if config.end_to_end:
                add_end_to_end(totals, end_to_end_run(backend, name, parts, config, cfg, vae))
            records += rows + totals
        del parts
    bar.close()
    add_speedups(records)
    return records


def end_to_end_run(backend: str, name: str, parts: PipelineParts, config: BenchConfig, cfg: bool, vae):
    """What :mod:`~edgefusion.bench.end_to_end` runs for ``backend``: ``generate`` at the bench's
    size and steps; a model that is not an LCM runs without CFG (guidance 1) when ``cfg`` is off."""
    from edgefusion.bench.end_to_end import EndToEndRun
    from edgefusion.bench.onnx import exported_folder, pipeline_folder

    export = exported_folder(name, parts, config.work_dir, vae) if backend == "onnxruntime" else None
    return EndToEndRun(
        backend,
        pipeline_folder(name, parts, config.work_dir),
        Path(config.work_dir),
        tuple(config.steps),
        config.resolution,
        config.repeats,
        torch.get_num_threads(),
        guidance=None if cfg or parts.lcm else 1.0,
        vae=vae,
        export=export,
    )


def add_end_to_end(totals: list[dict], run) -> None:
    """Measure ``run`` and put its figures beside the composed totals of the same step count."""
    from edgefusion.bench.end_to_end import measure_end_to_end

    measured = measure_end_to_end(run)
    for total in totals:
        runs = measured["runs_s"][total["steps"]]
        total |= {
            "end_to_end_s": statistics.median(runs),
            "end_to_end_runs_s": runs,
            "first_call_s": measured["first_call_s"],
            "first_call_warm_s": measured["first_call_warm_s"],
            "first_call_steps": measured["first_call_steps"],
            "end_to_end_peak_rss_mib": measured["peak_rss_mib"],
        }
