"""One compile for any input shape against one for the call's static shapes: a U-Net call of
OpenVINO IR exports (``edgefusion export --format openvino``), side by side in one process.

    python scripts/openvino-static-shapes.py outputs/bench/edgefusion-tiny-openvino-{w8a8,fp32}-512

Prints, per export and compile, the seconds of --repeats calls after two warm-ups (batch 1, the
export's traced size, float parts in bf16).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import openvino

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    core = openvino.Core()
    config = {
        "INFERENCE_PRECISION_HINT": "bf16",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": args.threads,
    }
    rng = np.random.default_rng(0)
    for export in args.exports:
        info = json.loads((export / "edgefusion_export.json").read_text())
        feed = {
            "sample": rng.standard_normal(
                (1, info["latent_channels"], *info["sample_size"]), dtype=np.float32
            ),
            "timestep": np.array([499.0], np.float32),
            "encoder_hidden_states": rng.standard_normal(
                (1, info["text_max_length"], info["cross_attention_dim"]), dtype=np.float32
            ),
        }
        if info["time_cond_proj_dim"]:
            feed["timestep_cond"] = rng.standard_normal((1, info["time_cond_proj_dim"]), dtype=np.float32)
        for static in (False, True):
            model = core.read_model(str(export / "unet" / "openvino_model.xml"))
            if static:
                model.reshape({name: list(value.shape) for name, value in feed.items()})
            request = core.compile_model(model, "CPU", config).create_infer_request()
            request.infer(feed)
            request.infer(feed)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                request.infer(feed)
                times.append(time.perf_counter() - start)
            kind = "static" if static else "dynamic"
            print(f"{export.name} {kind}: " + " ".join(f"{t:.3f}" for t in times), flush=True)


if __name__ == "__main__":
    main()
