#!/usr/bin/env bash
# Ship a tiny decoder distilled from toy:edgefusion (`edgefusion decoder distill` output folder) as
# toy:edgefusion-tinyvae: its `vae`, model_index.json and decoder.yaml (the config that trained it),
# with toy:edgefusion's U-Net, text encoder, tokenizer and scheduler linked, not copied (relative
# symlinks: the two models differ only in the decoder, and the repository keeps one copy).
#
#   scripts/ship-toy-tinyvae.sh runs/decoder/c32ft2/out
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: scripts/ship-toy-tinyvae.sh DECODER_OUT_FOLDER}
weights=src/edgefusion/toy/weights
dest=$weights/edgefusion-tinyvae
grep -q '"AutoencoderTiny"' "$src/model_index.json" || { echo "$src is not a tiny-decoder pipeline folder" >&2; exit 1; }
staging=$(mktemp -d "$weights/.edgefusion-tinyvae.XXXXXX")
trap 'rm -rf "$staging"' EXIT
cp -r "$src/vae" "$src/model_index.json" "$src/decoder.yaml" "$staging/"
chmod -R u=rwX,go=rX "$staging"
for part in unet text_encoder tokenizer scheduler; do ln -s "../edgefusion/$part" "$staging/$part"; done
rm -rf "$dest" && mv "$staging" "$dest"
echo "shipped $src as $dest"
