"""Whether torch's own knobs close its gap to OpenVINO on the U-Net call: EdgeFusion-Tiny's U-Net
(random weights) in bf16 at 512 px, timed with NCHW and channels_last tensors, each with the CPU
flash-attention kernel and with the math path (best of 3 after one warm-up call).

    python scripts/torch-bf16-unet-variants.py [--threads 2] [--resolution 512]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from edgefusion.bench.latency import component_inputs
from edgefusion.bench.models import build_parts


def best_of_3(unet: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    with torch.inference_mode():
        unet(**inputs)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            unet(**inputs)
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = build_parts("edgefusion-tiny")
    inputs = component_inputs(parts, args.resolution, cfg=False)["unet_step"]
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    unet = parts.unet.to(torch.bfloat16)
    for layout in (torch.contiguous_format, torch.channels_last):
        unet.to(memory_format=layout)
        inputs["sample"] = inputs["sample"].contiguous(memory_format=layout)
        for attention in ("flash", "math"):
            context = sdpa_kernel(SDPBackend.MATH) if attention == "math" else contextlib.nullcontext()
            with context:
                seconds = best_of_3(unet, inputs)
            print(f"{str(layout).removeprefix('torch.'):<18} {attention:<6} {seconds:.3f} s", flush=True)


if __name__ == "__main__":
    main()
