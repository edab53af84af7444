#!/usr/bin/env bash
# The CPU runtime comparison behind the choice of a default backend, run in a quiet window:
#
#   scripts/bench-cpu-runtime.sh                       # 512 px, 3 repeats: the real comparison
#   RESOLUTION=128 REPEATS=1 scripts/bench-cpu-runtime.sh   # a quick check that every step runs
#   BACKENDS="torch-bf16 openvino-bf16" scripts/bench-cpu-runtime.sh   # only these backends
#
# 1. EdgeFusion-Tiny (built-in architecture, random weights), 2 steps, --vae taesd: every backend
#    (torch fp32 / bf16, compiled torch fp32 / bf16 autocast, onnxruntime, OpenVINO fp32 / bf16),
#    each component (text encoder, U-Net call, SD VAE decoder, TAESD decoder), and whole generate
#    calls (first call cold and warm, then REPEATS images, peak RSS) decoding with TAESD.
# 2. SD-v1.4, 25 steps with CFG, torch fp32, for the ratio to it (SD_REPEATS images end to end).
# 3. PSNR of every backend's 2-step images of toy EdgeFusion against torch fp32 (same seeds).
#
# Records go to $OUT (JSON, then the tables printed from them); exports, saved pipelines and
# caches to $WORK, reused by later runs (the first call is timed with empty caches regardless).
set -euo pipefail
cd "$(dirname "$0")/.."

RESOLUTION=${RESOLUTION:-512}
REPEATS=${REPEATS:-3}
SD_REPEATS=${SD_REPEATS:-1}
THREADS=${THREADS:-2}
OUT=${OUT:-outputs/bench/cpu-runtime-$RESOLUTION}
WORK=${WORK:-outputs/bench}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"

# One bench process per backend, each written to its own JSON as it finishes: a 512 px run of every
# backend takes about an hour on 2 cores, and a re-run (after an interruption) skips the backends
# already measured. Each process starts fresh, so no backend inherits another's casts or caches.
BACKENDS=${BACKENDS:-"torch-fp32 torch-bf16 torch-compile torch-compile-bf16 onnxruntime openvino openvino-bf16"}
common=(--size "$RESOLUTION" --threads "$THREADS" --work-dir "$WORK" --json)

echo "== 1/3 edgefusion-tiny, 2 steps, each backend, SD VAE and TAESD decoders" >&2
for b in $BACKENDS; do
  [ -f "$OUT/edgefusion-tiny-$b.json" ] && continue
  echo "   $b" >&2
  "$PY" -m edgefusion.cli bench edgefusion-tiny --steps 2 --vae taesd --backend "$b" \
    --repeats "$REPEATS" "${common[@]}" > "$OUT/edgefusion-tiny-$b.json.partial"
  mv "$OUT/edgefusion-tiny-$b.json.partial" "$OUT/edgefusion-tiny-$b.json"
done
"$PY" - "$OUT" $BACKENDS <<'PYEOF'
import json, sys
from pathlib import Path

out, backends = Path(sys.argv[1]), sys.argv[2:]
records = [r for b in backends for r in json.loads((out / f"edgefusion-tiny-{b}.json").read_text())]
(out / "edgefusion-tiny.json").write_text(json.dumps(records, indent=1) + "\n")
PYEOF

echo "== 2/3 sd-v1.4, 25 steps, torch-fp32" >&2
if [ ! -f "$OUT/sd-v1.4.json" ]; then
  "$PY" -m edgefusion.cli bench sd-v1.4 --steps 25 --backend torch-fp32 \
    --repeats "$SD_REPEATS" "${common[@]}" > "$OUT/sd-v1.4.json.partial"
  mv "$OUT/sd-v1.4.json.partial" "$OUT/sd-v1.4.json"
fi

echo "== 3/3 PSNR of each backend against torch fp32, toy:edgefusion, 2 steps" >&2
"$PY" scripts/backend-psnr.py --work-dir "$WORK" --json > "$OUT/psnr.json.partial"
mv "$OUT/psnr.json.partial" "$OUT/psnr.json"

"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path

from edgefusion.bench.cli import print_table

out = Path(sys.argv[1])
tiny, sd = (json.loads((out / f"{name}.json").read_text()) for name in ("edgefusion-tiny", "sd-v1.4"))
print_table(tiny, f"edgefusion-tiny, {tiny[0]['resolution']} px, seconds")
print_table(sd, f"sd-v1.4, {sd[0]['resolution']} px, seconds")
sd_total = next(r for r in sd if r["component"] == "total")
for r in (r for r in tiny if r["component"] == "total"):
    ratio = sd_total.get("end_to_end_s", sd_total["median_s"]) / r.get("end_to_end_s", r["median_s"])
    print(f"{r['backend']:<20} end-to-end {r.get('end_to_end_s', float('nan')):8.3f} s   "
          f"SD-v1.4 fp32 25 steps / this: {ratio:7.1f}x")
psnr = {r["backend"]: r for r in json.loads((out / "psnr.json").read_text())}
for r in psnr.values():
    print(f"PSNR {r['backend']:<20} {r['psnr_db']:7.2f} dB vs torch-fp32 ({'ok' if r['reaches_floor'] else 'below 30 dB'})")
# The candidate default: the fastest whole generate call among backends that draw fp32's images.
faithful = [r for r in tiny if r["component"] == "total" and (r["backend"] == "torch-fp32" or psnr[r["backend"]]["reaches_floor"])]
best = min(faithful, key=lambda r: r.get("end_to_end_s", r["median_s"]))
print(f"fastest end to end at >= 30 dB: {best['backend']} ({best.get('end_to_end_s', best['median_s']):.3f} s per image, "
      f"first call {best.get('first_call_s', float('nan')):.1f} s cold, {best.get('first_call_warm_s', float('nan')):.1f} s warm)")
PYEOF
