"""Does decoding a posterior sample lose what the posterior mean keeps? Toy accuracy of the first
N cached training scenes: their PNGs, decoded means, and decoded samples (mean + std * noise).

    python scripts/decode-posterior.py --cache runs/teacher/cache --data runs/data/toy-teacher --n 512
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors import safe_open

from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.toy.metrics import ToyEvaluator, score_images
from edgefusion.toy.samples import images_to_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="a latent cache of edgefusion train")
    parser.add_argument("--data", type=Path, required=True, help="the toy dataset the cache was built from")
    parser.add_argument("--pipeline", default="toy:teacher", help="the pipeline whose VAE built the cache")
    parser.add_argument("--n", type=int, default=512)
    args = parser.parse_args()

    lines = (args.data / "metadata.jsonl").read_text(encoding="utf-8").splitlines()[: args.n]
    rows = [json.loads(line) for line in lines]
    prompts = [r["text"] for r in rows]
    with safe_open(str(args.cache / "shard-00000.safetensors"), "pt") as f:
        mean = f.get_slice("latent_mean")[: args.n].float()
        std = f.get_slice("latent_std")[: args.n].float()
    vae = AutoencoderKL.from_pretrained(str(resolve_model_path(args.pipeline)), subfolder="vae").eval()
    scale = vae.config.scaling_factor

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return (
            torch.cat([vae.decode(c / scale).sample for c in latents.split(128)]).clamp(-1, 1).add(1).div(2)
        )

    pngs = [Image.open(args.data / r["file_name"]).convert("RGB") for r in rows]
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    print(f"posterior std (mean) {std.mean():.3f}; spread of the means {mean.std():.3f}")
    evaluator = ToyEvaluator()
    for name, images in [
        ("PNGs", (images_to_tensor(pngs) + 1) / 2),
        ("decoded means", decode(mean)),
        ("decoded samples", decode(mean + std * noise)),
    ]:
        result = score_images(images, prompts, evaluator)
        one = result["one_object"]
        attributes = ", ".join(f"{k} {v:.3f}" for k, v in one["accuracy"].items())
        print(
            f"{name}: 1-object {one['accuracy_all']:.3f} ({attributes}); 2-object "
            f"{result['two_object']['accuracy_all']:.3f}"
        )


if __name__ == "__main__":
    main()
