"""What a user waits for: whole ``edgefusion generate`` calls per backend, first call included.

The component times (:mod:`~edgefusion.bench.latency`) say where time goes; these say what one
image costs through :func:`edgefusion.generate.generate` (tokenize, sample, decode, write the PNG
and its log line), the code path of ``edgefusion generate``. Each backend runs in a fresh process,
so the first call starts cold and the peak memory is that of generation alone:

- ``first_call_s``: load (and export, compile) the pipeline, then make the first image;
  compiler and OpenVINO caches start empty (fresh folders), as on a user's first run;
- ``first_call_warm_s``: the same in a second fresh process that finds those caches filled
  (what every later ``generate`` run pays);
- ``runs_s``: ``repeats`` more images per step count in the first process, after its first call;
- ``peak_rss_mib``: the first process's resident-set high-water mark (Linux ``VmHWM``).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

PROMPT = "a photograph of an astronaut riding a horse"


@dataclass(frozen=True)
class EndToEndRun:
    """One backend's end-to-end measurement (plain values: it crosses a process boundary)."""

    backend: str
    folder: Path  # the pipeline folder
    work_dir: Path  # scratch space: caches and the generated images
    steps: tuple[int, ...]
    resolution: int
    repeats: int
    threads: int
    guidance: float | None = None  # None: the model's (generate's default)
    vae: Path | None = None
    export: Path | None = None  # the ONNX export onnxruntime runs


def measure_end_to_end(run: EndToEndRun) -> dict:
    """``first_call_s``, ``first_call_warm_s``, ``runs_s`` (per step count) and ``peak_rss_mib``,
    each process with empty caches under ``run.work_dir`` (deleted afterwards)."""
    scratch = Path(run.work_dir) / f"e2e-{run.backend}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        cold = _in_fresh_process(run, scratch, run.repeats)
        warm = _in_fresh_process(run, scratch, 0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cold | {"first_call_warm_s": warm["first_call_s"]}


def _in_fresh_process(run: EndToEndRun, scratch: Path, repeats: int) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_generate_and_time, (run, scratch, repeats))


def _generate_and_time(run: EndToEndRun, scratch: Path, repeats: int) -> dict:
    """In a child process: time loading and the first image, then ``repeats`` images per step count."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / "inductor")  # before torch compiles anything
    import torch

    import edgefusion.export  # noqa: F401  (registers the graph backends, as the command line does)
    from edgefusion.bench.backends import load_backend_pipeline
    from edgefusion.bench.measure import peak_rss_mib
    from edgefusion.generate import generate

    torch.set_num_threads(run.threads)
    counter = itertools.count()

    def image(pipe, steps: int) -> None:
        out = scratch / "images" / str(next(counter))
        generate(
            PROMPT,
            run.folder,
            out=out,
            steps=steps,
            guidance=run.guidance,
            size=run.resolution,
            backend=run.backend,
            pipe=pipe,
            progress=False,
        )
        shutil.rmtree(out)

    start = time.perf_counter()
    pipe = load_backend_pipeline(run.backend, Path(run.folder), scratch, run.vae, run.export)
    image(pipe, run.steps[0])
    first = time.perf_counter() - start
    runs = {}
    for steps in run.steps:
        runs[steps] = []
        for _ in range(repeats):
            start = time.perf_counter()
            image(pipe, steps)
            runs[steps].append(time.perf_counter() - start)
    return {
        "first_call_s": first,
        "first_call_steps": run.steps[0],
        "runs_s": runs,
        "peak_rss_mib": peak_rss_mib(),
    }
