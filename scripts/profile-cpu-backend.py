"""Where one component's time goes in each CPU backend: the top operators of one warm call.

    python scripts/profile-cpu-backend.py [--model edgefusion-tiny] [--resolution 512]
        [--component unet_step] [--backend torch-fp32 --backend openvino ...] [--vae taesd] [--top 15]

The component runs as ``edgefusion bench`` runs it (same inputs, same runners), once to warm up,
then once profiled: torch backends with ``torch.profiler`` (self CPU time per aten op),
OpenVINO with its per-node counters (``PERF_COUNT``: time per layer type and the kernel it
ran, e.g. ``brgconv_avx512_amx`` or a ``ref`` fallback), onnxruntime with its session profiler
(time per op type). Components: text_encoder, unet_step, vae_decoder, tiny_decoder (with --vae).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import torch

import edgefusion.export  # noqa: F401  (registers the graph backends)
from edgefusion.bench.backends import BACKENDS, RUN_ORDER, check_backend
from edgefusion.bench.latency import component_inputs, tiny_decoder_folder, torch_runners
from edgefusion.bench.models import build_parts
from edgefusion.bench.onnx import graph_files


def torch_profile(run, top: int) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / 1e6) for e in events[:top]]


def openvino_profile(file: Path, inputs: dict, dtype: torch.dtype, top: int) -> list[tuple[str, float]]:
    from edgefusion.export.openvino import OpenVinoSession

    session = OpenVinoSession(file, dtype, torch.get_num_threads(), properties={"PERF_COUNT": True})
    session(**inputs)  # warm-up
    session(**inputs)
    times: Counter[str] = Counter()
    for node in session.request.profiling_info:
        times[f"{node.node_type} [{node.exec_type}]"] += node.real_time.total_seconds()
    return times.most_common(top)


def onnxruntime_profile(file: Path, inputs: dict, top: int) -> list[tuple[str, float]]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    types = {i.name: np.float32 if i.type == "tensor(float)" else np.int64 for i in session.get_inputs()}
    feed = {name: inputs[name].numpy().astype(types[name]) for name in types}
    session.run(None, feed)  # warm-up (profiled too: only the last run is counted below)
    session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    last_run = nodes[len(nodes) // 2 :]
    times: Counter[str] = Counter()
    for event in last_run:
        times[event["args"].get("op_name", "?")] += event["dur"] / 1e6
    return times.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="edgefusion-tiny")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--component", default="unet_step")
    parser.add_argument("--backend", action="append", choices=list(BACKENDS), default=None)
    parser.add_argument("--vae", default=None, help="taesd or a decoder folder (for tiny_decoder)")
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    backends = sorted(args.backend or ["torch-fp32", "openvino"], key=RUN_ORDER.index)
    for backend in backends:
        check_backend(backend)
    parts = build_parts(args.model)
    vae = tiny_decoder_folder(args.vae, parts, args.work_dir)
    inputs = component_inputs(parts, args.resolution, cfg=not parts.lcm)[args.component]
    for backend in backends:
        runtime, dtype = BACKENDS[backend]
        if runtime in ("onnxruntime", "openvino"):
            file = graph_files(args.model, parts, args.work_dir, vae)[args.component]
            if runtime == "openvino":
                rows = openvino_profile(file, inputs, dtype, args.top)
            else:
                rows = onnxruntime_profile(file, inputs, args.top)
        else:
            run = torch_runners(parts, {args.component: inputs}, dtype, runtime == "torch-compile")
            run = run[args.component]
            with torch.inference_mode():
                run()  # warm-up (compiles, for torch-compile)
            rows = torch_profile(run, args.top)
        total = sum(seconds for _, seconds in rows)
        where = f"{args.model} {args.component} {args.resolution} px, {backend}"
        print(f"\n{where}: top {len(rows)} ops, {total:.3f} s")
        for name, seconds in rows:
            print(f"  {seconds:8.4f} s  {name}")


if __name__ == "__main__":
    main()
