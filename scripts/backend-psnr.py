"""PSNR of each CPU backend's images against torch fp32's, same prompts and seeds (a toy model).

    python scripts/backend-psnr.py [--model toy:edgefusion] [--prompts 8] [--backend openvino ...]
        [--work-dir outputs/bench] [--json]

Each backend samples through the pipeline ``edgefusion generate --backend`` loads, at the model's
steps (2 for toy EdgeFusion) and recorded guidance; torch fp32 is the reference. A backend that
is to be the CPU default must reach 30 dB; each row says whether it does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import edgefusion.export  # noqa: F401  (registers onnxruntime and openvino)
import edgefusion.toy  # noqa: F401  (registers toy:NAME)
from edgefusion.bench.backends import BACKENDS
from edgefusion.bench.fidelity import backend_psnr
from edgefusion.quant.quantize import ReportSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="toy:edgefusion")
    parser.add_argument("--prompts", type=int, default=8, help="First N toy eval prompts, seeds 0..N-1.")
    parser.add_argument(
        "--backend", action="append", choices=[b for b in BACKENDS if b != "torch-fp32"], default=None
    )
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = args.backend or [b for b in BACKENDS if b != "torch-fp32"]
    records = backend_psnr(args.model, backends, args.work_dir, ReportSettings(num_prompts=args.prompts))
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        first = records[0]
        settings = f"{first['prompts']} prompts, {first['steps']} steps, guidance {first['guidance']:g}"
        print(f"{args.model}: {settings}")
        for r in records:
            verdict = "ok" if r["reaches_floor"] else f"BELOW {r['floor_db']:g} dB"
            print(f"  {r['backend']:<20} {r['psnr_db']:7.2f} dB vs torch-fp32  {verdict}")


if __name__ == "__main__":
    main()
