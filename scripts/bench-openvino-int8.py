"""OpenVINO with int8 activations against bf16 at 512 px: EdgeFusion-Tiny (built-in architecture,
random weights) with TAESD's layout, 2 steps, exported as OpenVINO IR twice (``fp32`` and
``w8a8``), then per export in one run: the export's time, the U-Net call (median of --repeats
after a warm-up) and whole ``generate`` calls in fresh processes (first call cold and warm, then
--repeats images), both computing their float parts in bf16 (``openvino-bf16``).

    python scripts/bench-openvino-int8.py --threads 2 --repeats 3 > openvino-int8.json

Random weights time the kernels, not quality (the toy model's accuracy and PSNR are measured by
``edgefusion eval`` and ``export --report``); calibration samples the random model on the first
--calibration-prompts toy validation prompts, which only need to give activations of the right size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from edgefusion.bench.end_to_end import EndToEndRun, measure_end_to_end
from edgefusion.bench.latency import tiny_decoder_folder
from edgefusion.bench.models import build_parts
from edgefusion.bench.onnx import pipeline_folder
from edgefusion.export.openvino import OpenVinoSession
from edgefusion.export.openvino_ir import export_openvino
from edgefusion.toy.prompts import load_prompts

MODEL = "edgefusion-tiny"


def unet_call_s(folder: Path, latent: int, threads: int, repeats: int) -> float:
    """Median seconds of one U-Net call of the export in ``folder`` (batch 1, no CFG, bf16)."""
    unet = OpenVinoSession(folder / "unet" / "openvino_model.xml", torch.bfloat16, threads)
    inputs = {
        "sample": torch.randn(1, 4, latent, latent),
        "timestep": torch.tensor([499.0]),
        "encoder_hidden_states": torch.randn(1, 77, 768),
        "timestep_cond": torch.randn(1, 256),
    }
    unet(**inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        unet(**inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-prompts", type=int, default=8)
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    parts = build_parts(MODEL)
    taesd = tiny_decoder_folder("taesd", parts, args.work_dir)
    folder = pipeline_folder(MODEL, parts, args.work_dir)
    del parts
    prompts = load_prompts("val", args.calibration_prompts)
    records = []
    for precision in ("fp32", "w8a8"):
        out = args.work_dir / f"{MODEL}-openvino-{precision}-{args.size}"
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is the JSON
            export_openvino(folder, out, precision, args.size, True, vae=taesd, calibration_prompts=prompts)
        export_s = time.perf_counter() - start
        run = EndToEndRun("openvino-bf16", out, args.work_dir, (2,), args.size, args.repeats, args.threads)
        records.append(
            {
                "model": MODEL,
                "export_precision": precision,
                "backend": "openvino-bf16",
                "size": args.size,
                "threads": args.threads,
                "calibration_prompts": args.calibration_prompts if precision == "w8a8" else None,
                "export_s": export_s,
                "unet_call_s": unet_call_s(out, args.size // 8, args.threads, args.repeats),
                **measure_end_to_end(run),
            }
        )
    print(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
