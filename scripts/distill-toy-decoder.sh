#!/usr/bin/env bash
# The toy tiny decoder: distil toy:edgefusion's VAE decoder (configs/toy/decoder.yaml), then measure
# it against the full decoder on held-out scenes and end to end (2 steps, same seeds).
#
#   scripts/distill-toy-decoder.sh                    # the full run (resumes when re-run)
#   scripts/distill-toy-decoder.sh train.steps=500    # overrides go to the training command
#
# Needs the toy teacher's data and latent cache (README: "The toy world"):
#   edgefusion toy data --kind clean --num-prompts 100000 --seed 100 --out runs/data/toy-teacher
# The output, runs/decoder/toy/out, is toy:edgefusion with the tiny decoder as its vae:
#   edgefusion generate "a red circle" --model runs/decoder/toy/out
#   edgefusion generate "a red circle" --vae runs/decoder/toy/out      # the same decoder, swapped in
set -euo pipefail
cd "$(dirname "$0")/.."

nice -n 19 edgefusion decoder distill --config configs/toy/decoder.yaml "$@"

# Held-out scenes (another seed than the training data's) for the latent PSNR.
if [ ! -d runs/data/toy-decoder-val ]; then
    nice -n 19 edgefusion toy data --kind clean --num-prompts 256 --seed 5 --out runs/data/toy-decoder-val
fi
nice -n 19 edgefusion decoder compare --model toy:edgefusion --vae runs/decoder/toy/out \
    --data runs/data/toy-decoder-val --latents 256 --num-prompts 200 | tee runs/decoder/toy/compare.json
