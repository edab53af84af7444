"""Where an LCM student loses the teacher: its one-step answers along the teacher's own ODE path.

    python scripts/lcm-trajectory-accuracy.py --student toy:edgefusion --teacher toy:teacher \
        --grid 4 --guidance 2 --num-prompts 120

For each 1-object validation prompt, the teacher solves its guided DDIM ODE on the distillation
grid (here 999 -> 749 -> 499 -> 249 -> 0) from one noise. At every point x_t of that path, the
student's consistency function should return the path's end; this script decodes what it does
return and scores it with the toy evaluator, beside the teacher's end itself, and reports the
latent mean squared distance to the end. A student that is right from x_249 but wrong from
x_999 fails at the top of the path (a fitting problem); one wrong from every point inherits an
error; a student whose answers stay close to the end but score badly loses detail the metric
needs (shape) under the L2 objective.
"""

from __future__ import annotations

import argparse
import json

import torch

from edgefusion.pipeline.lcm import guidance_embedding
from edgefusion.pipeline.load import load_pipeline
from edgefusion.toy.metrics import ToyEvaluator, parse_prompts, score_images
from edgefusion.toy.prompts import load_prompts
from edgefusion.train.lcm import DDIMSolver, boundary_scalings, guided_ddim_solve, x0_and_eps


def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Latents to images in [0, 1] with the pipeline's VAE."""
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (images / 2 + 0.5).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True, help="an LCM pipeline folder or toy:NAME")
    parser.add_argument("--teacher", default="toy:teacher")
    parser.add_argument("--grid", type=int, default=4, help="the distillation grid (num_ddim_steps)")
    parser.add_argument("--guidance", type=float, default=2.0, help="teacher CFG scale (LCM w = scale - 1)")
    parser.add_argument("--num-prompts", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    every = load_prompts("val")
    scenes = parse_prompts(every)
    prompts = [p for p, s in zip(every, scenes, strict=True) if s.layout == "single"][: args.num_prompts]
    teacher_pipe, student_pipe = load_pipeline(args.teacher, "torch"), load_pipeline(args.student, "torch")
    teacher, student = teacher_pipe.unet.float().eval(), student_pipe.unet.float().eval()
    schedule = teacher_pipe.scheduler
    solver = DDIMSolver(schedule.alphas_cumprod, args.grid)
    kind = schedule.config.prediction_type
    evaluator = ToyEvaluator("toy:evaluator")

    with torch.no_grad():
        text, uncond = teacher_pipe.encode_prompt(prompts, "cpu", 1, True)
        uncond = uncond[:1]
        n = len(prompts)
        side = teacher.config.sample_size
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.randn(n, teacher.config.in_channels, side, side, generator=gen)
        w = torch.full((n,), args.guidance - 1)
        w_embed = guidance_embedding(w, student.config.time_cond_proj_dim)
        path = []  # (t, x_t) down the teacher's path, then its end
        index = torch.full((n,), args.grid - 1)
        for _ in range(args.grid):
            path.append((int(solver.timesteps[index[0]]), x))
            x, _ = guided_ddim_solve(teacher, solver, x, index, 1, text, uncond, w, kind)
            index = index - 1
        end = x
        rows = [
            {
                "from": "teacher end",
                **_scores(decode(teacher_pipe, end), prompts, evaluator),
                "mse_to_end": 0.0,
            }
        ]
        for t, x_t in path:
            times = torch.full((n,), t)
            output = student(x_t, times, text, timestep_cond=w_embed).sample
            x0, _ = x0_and_eps(output, times, x_t, schedule.alphas_cumprod, kind)
            c_skip, c_out = (c.float().reshape(-1, 1, 1, 1) for c in boundary_scalings(times))
            answer = c_skip * x_t + c_out * x0
            rows.append(
                {
                    "from": f"student at t={t}",
                    **_scores(decode(student_pipe, answer), prompts, evaluator),
                    "mse_to_end": float(((answer - end) ** 2).mean()),
                }
            )
    print(json.dumps({"student": args.student, "teacher": args.teacher, "n": n, "rows": rows}, indent=1))


def _scores(images: torch.Tensor, prompts: list[str], evaluator: ToyEvaluator) -> dict:
    one = score_images(images, prompts, evaluator)["one_object"]
    return {"all": round(one["accuracy_all"], 3), **{k: round(v, 3) for k, v in one["accuracy"].items()}}


if __name__ == "__main__":
    main()
