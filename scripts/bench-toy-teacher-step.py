"""Seconds per training step of the toy teacher U-Net on this CPU, by attention and precision.

    python scripts/bench-toy-teacher-step.py [--batch 32] [--steps 6] [--compile]

Answers whether a longer teacher run fits on the 2-core development machine (docs/RESULTS.md,
section 2): one zero-terminal-SNR step (forward, backward, AdamW) of the shipped architecture on
random latents and text embeddings, timed after two warm-up steps, for each setting side by side
in one process; then the share of one step's CPU time each of the top operators takes, from
torch's profiler. ``--compile`` adds a ``torch.compile`` row (its first step compiles, minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from diffusers.models.attention_processor import AttnProcessor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import profile

from edgefusion.toy.models import ToyModelSizes, build_unet
from edgefusion.toy.train import denoising_loss, sd_noise_scheduler

WARMUP = 2


def make_step(unet, batch: int, bf16: bool, attention: SDPBackend | None):
    """One optimizer step on fixed random inputs, under the given precision and SDPA backend."""
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    scheduler = sd_noise_scheduler(zero_terminal_snr=True)
    x0 = torch.randn(batch, 4, 16, 16)
    cond = torch.randn(batch, 77, unet.config.cross_attention_dim)

    def step(i: int) -> None:
        backend = sdpa_kernel(attention) if attention is not None else contextlib.nullcontext()
        with backend, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = denoising_loss(
                unet, scheduler, x0, cond, cond[:1], torch.Generator().manual_seed(i), 0.1, 0.0
            )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")

    def fresh_unet():
        torch.manual_seed(0)
        return build_unet(ToyModelSizes(), 16)

    settings = {
        "fp32, SDPA default (flash)": (fresh_unet(), False, None),
        "bf16 autocast, SDPA default": (fresh_unet(), True, None),
        "fp32, SDPA math backend": (fresh_unet(), False, SDPBackend.MATH),
    }
    classic = fresh_unet()
    classic.set_attn_processor(AttnProcessor())
    settings["fp32, diffusers AttnProcessor (no SDPA)"] = (classic, False, None)
    if args.compile:
        settings["fp32, torch.compile"] = (torch.compile(fresh_unet()), False, None)
    steps = {
        name: make_step(unet, args.batch, bf16, attention)
        for name, (unet, bf16, attention) in settings.items()
    }
    for name, step in steps.items():
        print(f"{name:42s} {seconds_per_step(step, args.steps):.3f} s/step")

    with profile() as prof:  # the first setting, already warmed up
        next(iter(steps.values()))(99)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print("share of one fp32 step's CPU time, top operators:")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]:
        print(f"  {e.self_cpu_time_total / total:6.1%}  {e.key}")


if __name__ == "__main__":
    main()
