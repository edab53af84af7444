"""Seconds per training step of toy teacher U-Net designs on this CPU, side by side in one process.

    python scripts/bench-toy-teacher-step.py [--batch 32] [--steps 6] [--compile]

One step is what ``edgefusion train`` does per batch (the denoising loss on the zero-terminal-SNR
v-prediction schedule, backward, fused AdamW) on random latents and text embeddings, timed after
two warm-up steps. The designs: v1 (the first shipped teacher: 8 heads per stage, so heads 4-16
wide) and v2 (1/2/4/4 heads, every head 32 wide; configs/toy/teacher-unet.json), in fp32 and bf16
autocast, and v2 with channels_last memory. Then the share of one v2 step's CPU time per top
operator, from torch's profiler. ``--compile`` adds a ``torch.compile`` row (compiles for minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from diffusers import DDPMScheduler
from torch.profiler import profile

from edgefusion.toy.models import ToyModelSizes, build_unet
from edgefusion.train.denoise import denoising_loss

WARMUP = 2
DESIGNS = {"v1 (8 heads)": 8, "v2 (1/2/4/4 heads)": (1, 2, 4, 4)}


def make_step(unet, batch: int, bf16: bool, channels_last: bool = False):
    """One optimizer step on fixed random inputs, under the given precision and memory format."""
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, fused=True)
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
    )
    x0 = torch.randn(batch, 4, 16, 16)
    if channels_last:
        x0 = x0.to(memory_format=torch.channels_last)
    cond = torch.randn(batch, 77, unet.config.cross_attention_dim)

    def step(i: int) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = denoising_loss(unet, scheduler, x0, cond, torch.Generator().manual_seed(i))
        opt.zero_grad(set_to_none=True)
        loss["loss"].backward()
        opt.step()

    return step


def seconds_per_step(step, steps: int) -> float:
    for i in range(WARMUP):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(WARMUP + i)
    return (time.perf_counter() - t0) / steps


def fresh_unet(heads):
    torch.manual_seed(0)
    return build_unet(dataclasses.replace(ToyModelSizes(), unet_head_dim=heads), 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")

    steps = {}
    for name, heads in DESIGNS.items():
        steps[f"{name}, fp32"] = make_step(fresh_unet(heads), args.batch, False)
        steps[f"{name}, bf16 autocast"] = make_step(fresh_unet(heads), args.batch, True)
    v2 = DESIGNS["v2 (1/2/4/4 heads)"]
    steps["v2, fp32, channels_last"] = make_step(fresh_unet(v2), args.batch, False, channels_last=True)
    if args.compile:
        steps["v2, fp32, torch.compile"] = make_step(torch.compile(fresh_unet(v2)), args.batch, False)
    for name, step in steps.items():
        seconds = seconds_per_step(step, args.steps)
        print(f"{name:40s} {seconds:.3f} s/step  {args.batch / seconds:6.1f} samples/s")

    with profile() as prof:  # v2 in fp32, already warmed up
        steps["v2 (1/2/4/4 heads), fp32"](99)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print("share of one v2 fp32 step's CPU time, top operators:")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]:
        print(f"  {e.self_cpu_time_total / total:6.1%}  {e.key}")


if __name__ == "__main__":
    main()
