#!/usr/bin/env bash
# The toy world's shipped chain on one GPU machine: the teacher U-Net retrained with 10x the data
# (configs/toy/teacher-v2.yaml), then the BK-Tiny cut from it and distilled by it (run (c),
# toy:bk-tiny-adv) and the LCM-distilled EdgeFusion on top (toy:edgefusion), with the unchanged
# configs of the shipped models.
#
#   scripts/toy-v2-gpu.sh PACK_DIR [TEACHER_MINUTES] [full|smoke-only|no-preflight]
#
# Measured on an H200 (first attempt, docs/RESULTS.md section 2): preflight 65 s, the teacher's
# cache 46 s, distill steps 101-129 ms at batch 128, LCM 500 steps 68-76 s. From those, the default
# 3.5 teacher minutes should make the whole run about 9.5 minutes: planned, not yet measured.
#
# Run from the repository root, with CUDA torch and the project's dependencies importable.
# A preflight runs every stage for a few steps on the device first, so a device bug costs a
# minute, not the lease. The KD data and its latent cache are made while the teacher trains
# (they depend on the encoders alone, which v2 keeps). Each finished model is packed into
# PACK_DIR as soon as it exists, as tar parts of at most 15 MB: its U-Net, scheduler, configs
# and loss logs; the tokenizer, text encoder and VAE are the shipped teacher's and are left out.
# The run swaps the shipped teacher and BK-Tiny in src/edgefusion/toy/weights for the new ones
# as they finish, so the unchanged configs (toy:teacher, toy:bk-tiny-adv) chain them.
set -uo pipefail
pack_dir=${1:?usage: scripts/toy-v2-gpu.sh PACK_DIR [TEACHER_MINUTES] [full|smoke-only|no-preflight]}
minutes=${2:-3.5}
mode=${3:-full}
device=${DEVICE:-cuda}
weights=src/edgefusion/toy/weights
ef() { python3 -m edgefusion.cli "$@"; }
log() { echo "[$SECONDS s] $*"; }
mkdir -p "$pack_dir" runs/logs runs/pack

pack() {  # NAME MODEL_DIR RUN_DIR: the new parts of a model folder and its logs, in parts
    local name=$1 model=$2 run=$3 stage=runs/pack/$1
    rm -rf "$stage" && mkdir -p "$stage"
    cp -r "$model"/unet "$model"/scheduler "$model"/*.json "$stage"/
    cp "$model"/*.yaml "$stage"/ 2>/dev/null
    find "$run" -maxdepth 3 -type f \( -name '*.csv' -o -name '*.json' -o -name '*.yaml' \) \
        -size -5M -exec cp --parents {} "$stage"/ \;
    tar -cf - -C runs/pack "$name" | split -b 15m - "$pack_dir/$name.tar.part-"
    log "packed $name"
}

preflight() {
    local s=runs/smoke
    rm -rf "$s" && mkdir -p "$s"
    printf 'cache_samples: 1000\nunet_steps: 5\nunet_batch: 64\nzero_snr_steps: 5\ncheckpoint_every: 5\n' \
        > "$s/teacher.yaml"
    ef toy data --kind clean --n 256 --seed 1 --out "$s/data" >/dev/null &&
    ef toy train --encoders toy:teacher --config "$s/teacher.yaml" --device "$device" --workers 4 \
        --work "$s/work" --out "$s/out" &&
    ef distill --config configs/kd/toy-bk-tiny-adv-ship.yaml teacher="$s/out/teacher" \
        pipeline="$s/out/teacher" data.path="$s/data" data.cache="$s/cache" out="$s/kd/out" run_dir="$s/kd/run" \
        train.steps=3 train.batch_size=8 train.checkpoint_every=3 &&
    ef lcm --config configs/lcm/toy-edgefusion.yaml student="$s/kd/out" teacher="$s/out/teacher" \
        pipeline="$s/out/teacher" data.path="$s/data" data.cache="$s/cache" out="$s/lcm/out" \
        run_dir="$s/lcm/run" train.steps=3 train.batch_size=8 train.checkpoint_every=3
}

if [ "$mode" != no-preflight ]; then
    log "preflight on $device"
    preflight || { log "preflight FAILED"; exit 1; }
    log "preflight passed"
    [ "$mode" = smoke-only ] && exit 0
fi

# KD data + latent cache on the CPU cores (the cache's encoders are v1's and v2's alike).
(
    ef toy data --kind clean --n 20000 --seed 7 --out runs/data/toy-kd &&
    python3 - <<'EOF'
from pathlib import Path

import torch
from accelerate import Accelerator

from edgefusion.train.config import DataConfig
from edgefusion.train.data import prepare_training_data

data = DataConfig(path="runs/data/toy-kd", cache="runs/kd/cache-toy", resolution=64)
prepare_training_data(data, Path("src/edgefusion/toy/weights/teacher"), Accelerator(), torch.float32)
EOF
) >runs/logs/kd-data.log 2>&1 &
data_job=$!

log "teacher v2 ($minutes min)"
ef toy train --encoders toy:teacher --config configs/toy/teacher-v2.yaml --device "$device" \
    --workers 12 --max-minutes "$minutes" --work runs/toy-v2/work --out runs/toy-v2/out ||
    { log "teacher FAILED"; exit 1; }
pack teacher runs/toy-v2/out/teacher runs/toy-v2/work
mv "$weights/teacher" runs/toy-v1-teacher && cp -r runs/toy-v2/out/teacher "$weights/teacher"

wait $data_job || { log "KD data FAILED"; tail -20 runs/logs/kd-data.log; exit 1; }
log "KD data and cache ready; BK-Tiny (c)"
ef distill --config configs/kd/toy-bk-tiny-adv-ship.yaml >runs/logs/bk-tiny-adv.log 2>&1 ||
    { log "bk-tiny-adv FAILED"; tail -20 runs/logs/bk-tiny-adv.log; exit 1; }
pack bk-tiny-adv runs/kd/c-ship/out runs/kd/c-ship/run
rm -rf "$weights/bk-tiny-adv" && cp -r runs/kd/c-ship/out "$weights/bk-tiny-adv"

log "EdgeFusion (LCM)"
ef lcm --config configs/lcm/toy-edgefusion.yaml >runs/logs/edgefusion.log 2>&1 ||
    { log "edgefusion FAILED"; tail -20 runs/logs/edgefusion.log; exit 1; }
pack edgefusion runs/lcm/edgefusion/out runs/lcm/edgefusion/run
log "done"
