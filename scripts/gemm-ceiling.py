"""The matrix-multiply ceiling of this CPU: TFLOPS of square matmuls in torch (oneDNN), bf16 and
fp32, at the thread count the latency tables use; the ceiling is the best size's. A U-Net call's
share of it says how much of the machine a backend uses:
share = 2 * MACs per call / seconds per call / ceiling. Run it in the same quiet window as the
latencies it is compared with: on a shared virtual machine both drift by 20% between sessions.

    python scripts/gemm-ceiling.py [--threads 2] [--sizes 1024 2048 4096] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def tflops(dtype: torch.dtype, size: int, repeats: int) -> float:
    """Best of ``repeats`` timed ``size``^3 matmuls after two warm-up calls."""
    a, b = (torch.randn(size, size).to(dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    capability = torch.backends.cpu.get_cpu_capability()
    record = {"threads": args.threads, "cpu_capability": capability}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        by_size = {size: round(tflops(dtype, size, args.repeats), 3) for size in args.sizes}
        record[f"{name}_tflops_by_size"] = by_size
        record[f"{name}_tflops"] = max(by_size.values())
    print(json.dumps(record))


if __name__ == "__main__":
    main()
