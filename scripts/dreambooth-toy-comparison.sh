#!/usr/bin/env bash
# DreamBooth on the toy subject (a yellow 6-pointed star) across the compact models: toy:teacher
# and toy:bk-tiny-adv at their 25 steps, toy:edgefusion (an LCM) at its 2; full fine-tune and LoRA
# (configs/dreambooth/toy-{full,lora}.yaml); with and without prior preservation; and LoRA trained
# on toy:bk-tiny-adv then sampled on toy:edgefusion (lora.sample_on). For each trained
# model and each untouched base: subject fidelity (large-size context prompts; small ones apart),
# CLIP-I, prompt fidelity (`toy subject eval`), preservation (1-object all-correct of
# `eval --prompts val --num-prompts 120`: the set's 120 one-object prompts), training wall time
# and the size of what the run adds to its base; collected in $ROOT/results.{csv,json} (default runs/dreambooth/comparison),
# with a contact sheet per model ($ROOT/*/sheet.png) and one of the subject in six new large
# contexts across the models ($ROOT/contexts.png).
#
#   scripts/dreambooth-toy-comparison.sh                      # everything (re-running resumes)
#   MODELS="teacher edgefusion" MODES=full PRIORS=true scripts/dreambooth-toy-comparison.sh
#   scripts/dreambooth-toy-comparison.sh train.steps=200      # settings go to every dreambooth run
#   LCM_PATH=false scripts/dreambooth-toy-comparison.sh       # without the LoRA-on-the-LCM rows
#
# One thread per process by default (OMP_NUM_THREADS): the toy models gain little from more.
# A finished step (a subject.json, eval.json or train.json) is never redone; delete it to redo it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
EF="${EF:-edgefusion}"
PYTHON="${PYTHON:-python}"
ROOT="${ROOT:-runs/dreambooth/comparison}"
MODELS="${MODELS:-teacher bk-tiny-adv edgefusion}"
MODES="${MODES:-full lora}"
PRIORS="${PRIORS:-true false}"
INSTANCES=runs/dreambooth/instances
mkdir -p "$ROOT"

[ -d "$INSTANCES" ] || nice -n 10 "$EF" toy subject images --out "$INSTANCES"

# score NAME MODEL: the subject metrics, the contact sheet and preservation of MODEL into $ROOT/NAME.
score() {
    local dir="$ROOT/$1"
    mkdir -p "$dir"
    if [ ! -s "$dir/subject.json" ]; then
        nice -n 10 "$EF" toy subject eval --model "$2" --json --sheet "$dir/sheet.png" > "$dir/subject.json.tmp"
        mv "$dir/subject.json.tmp" "$dir/subject.json"
    fi
    if [ ! -s "$dir/eval.json" ]; then
        nice -n 10 "$EF" eval --model "$2" --prompts val --num-prompts 120 --json > "$dir/eval.json.tmp"
        mv "$dir/eval.json.tmp" "$dir/eval.json"
    fi
}

# personalize NAME CONFIG MODEL [settings...]: one dreambooth run into $ROOT/NAME (skipped once it
# has finished), its wall time in train.json, then its scores.
personalize() {
    local name=$1 config=$2 model=$3
    local dir="$ROOT/$name"
    shift 3
    if [ ! -s "$dir/train.json" ]; then
        mkdir -p "$dir"
        local start
        start=$(date +%s)
        nice -n 10 "$EF" dreambooth --config "$config" --model "$model" --out "$dir/out" run_dir="$dir/run" "$@"
        echo "{\"seconds\": $(( $(date +%s) - start ))}" > "$dir/train.json"
    fi
    score "$name" "$dir/out"
}

for model in $MODELS; do
    score "$model-base" "toy:$model"
    for mode in $MODES; do
        for prior in $PRIORS; do
            personalize "$model-$mode-prior-$prior" "configs/dreambooth/toy-$mode.yaml" "toy:$model" \
                prior_preservation="$prior" "$@"
        done
    done
done

# The LCM path: LoRA trained on toy:bk-tiny-adv (the 25-step model toy:edgefusion was distilled
# from), recorded for and sampled on toy:edgefusion at its 2 steps (lora.sample_on).
if [ "${LCM_PATH:-true}" = true ]; then
    for prior in $PRIORS; do
        personalize "edgefusion-lora-from-bk-tiny-adv-prior-$prior" configs/dreambooth/toy-lora.yaml \
            toy:bk-tiny-adv prior_preservation="$prior" lora.sample_on=toy:edgefusion "$@"
    done
fi

# One row per scored folder: the numbers above, the wall time of its dreambooth run (class images
# included; a resumed run counts its last leg only) and the bytes of what it adds to its base
# (the LoRA file, or the whole fine-tuned U-Net folder as saved).
"$PYTHON" - "$ROOT" <<'EOF'
import csv, json, sys
from pathlib import Path

root = Path(sys.argv[1])
rows = []
for folder in sorted(p for p in root.iterdir() if (p / "subject.json").is_file() and (p / "eval.json").is_file()):
    subject = json.loads((folder / "subject.json").read_text())
    preservation = json.loads((folder / "eval.json").read_text())
    out = folder / "out"
    lora = out / "pytorch_lora_weights.safetensors"
    added = lora if lora.is_file() else out / "unet"
    train = folder / "train.json"
    small = subject["subject_fidelity_small"]
    rows.append({
        "run": folder.name,
        "model": subject["settings"]["model"],
        "steps": subject["settings"]["steps"],
        "subject_fidelity": round(subject["subject_fidelity"], 4),
        "subject_fidelity_small": None if small is None else round(small, 4),
        "clip_i": round(subject["clip_i"], 4),
        "prompt_fidelity": round(subject["prompt_fidelity"]["all"], 4),
        "background": round(subject["prompt_fidelity"]["background"], 4),
        "position": round(subject["prompt_fidelity"]["position"], 4),
        "size": round(subject["prompt_fidelity"]["size"], 4),
        "preservation_1_object": round(preservation["one_object"]["accuracy_all"], 4),
        "train_seconds": json.loads(train.read_text())["seconds"] if train.is_file() else None,
        "output_bytes": sum(f.stat().st_size for f in [added, *added.rglob("*")] if f.is_file())
        if out.exists() else None,
    })
(root / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
with (root / "results.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
print(f"wrote {root / 'results.csv'} and {root / 'results.json'} ({len(rows)} rows)")
EOF

# The subject in six new large contexts (seed 0, each model's own steps), one row per scored
# folder: the base models first, then the personalized ones (redrawn on every run).
nice -n 10 "$PYTHON" - "$ROOT" <<'EOF'
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults
from edgefusion.toy.samples import tensor_to_images
from edgefusion.toy.subject import context_prompts

root = Path(sys.argv[1])
prompts = [text for text, scene in context_prompts() if scene.objects[0].size == "large"][::3][:6]
folders = sorted(p for p in root.iterdir() if (p / "subject.json").is_file())
folders = [p for p in folders if p.name.endswith("-base")] + [p for p in folders if not p.name.endswith("-base")]
side, label = 64, 230
sheet = Image.new("RGB", (label + side * len(prompts), side * len(folders)), "white")
draw = ImageDraw.Draw(sheet)
for row, folder in enumerate(folders):
    model = f"toy:{folder.name[:-5]}" if folder.name.endswith("-base") else str(folder / "out")
    pipe = load_pipeline(model)
    steps, guidance = sampling_defaults(pipe, model, None, None)
    images = generate_tensors(pipe, prompts, [0] * len(prompts), steps, guidance)
    for col, image in enumerate(tensor_to_images(images * 2 - 1)):
        sheet.paste(image.resize((side, side)), (label + col * side, row * side))
    draw.text((4, row * side + side // 2 - 6), folder.name, fill="black")
sheet.save(root / "contexts.png", optimize=True)
print(f"wrote {root / 'contexts.png'}: {len(folders)} models x {len(prompts)} prompts: {prompts}")
EOF
