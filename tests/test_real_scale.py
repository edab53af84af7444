"""The whole recipe at real scale, through the command line: SD-v1.4's architecture with random
weights at 256 px, compressed to BK-SDM-Tiny, two knowledge-distillation steps, two LCM steps with
the full-size model as the ODE teacher, W8A16 quantization, and one 2-step image.

It checks that every stage takes SD-v1.4's real shapes (no toy-sized assumption), and measures
what the run costs on a CPU: peak memory of the process, peak disk under ``tmp_path`` and wall
time, each printed (``pytest -s``) and held to a budget (12 GB, 5 GB, 15 minutes). Random weights:
it checks plumbing and cost, not quality. Slow, so deselected by default; ``make test-slow`` runs
it. The LCM stage sets the memory peak: an fp32 teacher beside the student, its gradients, Adam's
moments and the target network.

The runs end without the final resumable checkpoint (``train.final_checkpoint: false``): at full
size it holds fp32 weights and Adam's moments, several GB that a two-step run will not continue
from. Each intermediate folder is deleted once no later stage reads it.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

GB = 10**9
SIZE = 256
MAX_RSS = 12 * GB
MAX_DISK = 5 * GB
MAX_SECONDS = 15 * 60


def write_random_sd_v14(folder: Path) -> Path:
    """An SD-v1.4 pipeline folder: the built-in U-Net, VAE and CLIP text encoder configs with
    diffusers' and transformers' random initialization (seeded), the toy CLIP tokenizer (its ids
    index the first rows of the 49,408-row embedding table), SD-v1's PNDM scheduler; stored in
    float16, as SD-v1.4's published fp16 weights are."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from edgefusion.pipeline.configs import builtin_config
    from edgefusion.pipeline.load import cast_
    from edgefusion.toy.tokenizer import load_toy_tokenizer

    tokenizer = load_toy_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(builtin_config("sd-v1", "unet"))
    vae = AutoencoderKL.from_config(builtin_config("sd-v1", "vae"))
    text_config = builtin_config("sd-v1", "text_encoder")
    text_config.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    for model in (unet, vae, text_encoder):
        cast_(model.eval(), torch.float16)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


def disk_bytes(root: Path) -> int:
    """Bytes ``root`` takes on disk (allocated blocks)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:  # renamed or deleted between the listing and the stat
                pass
    return total


class Monitor:
    """Samples, every ``every`` seconds while it runs, the disk use under ``root`` and this
    process's resident memory, keeping the peaks: disk, and memory per stage (:meth:`stage` names
    the one under way)."""

    def __init__(self, root: Path, every: float = 0.5) -> None:
        self.root, self.every = root, every
        self.disk = 0
        self.rss: dict[str, int] = {}
        self._stage = "setup"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._process = psutil.Process()

    def stage(self, name: str) -> None:
        gc.collect()  # what an earlier stage left for the collector does not count against this one
        self._sample()
        self._stage = name

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        rss = self._process.memory_info().rss
        self.rss[self._stage] = max(self.rss.get(self._stage, 0), rss)
        self.disk = max(self.disk, disk_bytes(self.root))


def write_captioned_images(folder: Path, n: int = 4) -> Path:
    """An HF imagefolder of ``n`` seeded 256 px images (smooth colour fields with a bright square)
    and their captions."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, SIZE)
    rows = []
    for i in range(n):
        base = rng.uniform(0, 255, size=3)
        tilt = rng.uniform(-80, 80, size=3)
        pixels = base + tilt * ramp[None, :, None] + tilt[::-1] * ramp[:, None, None]
        x, y = rng.integers(0, SIZE - 64, size=2)
        pixels[y : y + 64, x : x + 64] = 255 - base
        name = f"{i:03d}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name)
        rows.append({"file_name": name, "text": f"a bright square on a colour field, number {i}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def invoke(app, *args: object) -> str:
    """Run one ``edgefusion`` command; its output, or the failure with it."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_the_recipe_runs_on_sd_v14_shapes_at_256_px(tmp_path: Path) -> None:
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    started = time.monotonic()
    with Monitor(tmp_path) as monitor:
        # 1. The full-size model (random weights), and a few captioned 256 px images.
        sd = write_random_sd_v14(tmp_path / "sd-v1.4")
        data = write_captioned_images(tmp_path / "data")

        # 2. BK-SDM-Tiny, initialized from the teacher's weights.
        monitor.stage("compress")
        tiny = tmp_path / "bk-tiny"
        output = invoke(app, "compress", "--model", sd, "--variant", "tiny", "--out", tiny)
        assert "323,384,964" in output and "copied from the teacher" in output  # BK-SDM-Tiny's U-Net

        # 3. Two knowledge-distillation steps from the full-size teacher, batch 1, no student EMA.
        #    The teacher stays float32: the stage casts frozen models to the mixed-precision dtype,
        #    and 16-bit convolutions on a CPU without native 16-bit arithmetic are ~40x slower.
        #    The latent cache frees the VAE and text encoder before training (~0.8 GB).
        monitor.stage("distill")
        training = {
            "data": {"path": str(data), "resolution": SIZE},
            "train": {
                "steps": 2,
                "batch_size": 1,
                "learning_rate": 1.0e-5,
                "checkpoint_every": 1000,
                "final_checkpoint": False,
                "seed": 0,
            },
            "save_dtype": "float16",
        }
        kd = {
            "teacher": str(sd),
            "student": str(tiny),
            "variant": "tiny",
            "out": str(tmp_path / "kd" / "out"),
            "run_dir": str(tmp_path / "kd" / "run"),
            **training,
            "data": {**training["data"], "cache": str(tmp_path / "kd" / "cache")},
            "train": {**training["train"], "ema_decay": None},
        }
        (tmp_path / "kd.yaml").write_text(yaml.safe_dump(kd))
        assert "distilled 2 steps" in invoke(app, "distill", "--config", tmp_path / "kd.yaml")
        assert not any((tmp_path / "kd" / "run").glob("checkpoints/step-*"))
        shutil.rmtree(tiny)  # no later stage reads it

        # 4. Two LCM steps: the distilled BK-Tiny learns from the full-size model's guided ODE.
        monitor.stage("lcm")
        lcm = {
            "student": kd["out"],
            "teacher": str(sd),
            "out": str(tmp_path / "lcm" / "out"),
            "run_dir": str(tmp_path / "lcm" / "run"),
            "w_min": 2.0,
            "w_max": 8.0,
            **training,
            "data": {**training["data"], "cache": str(tmp_path / "lcm" / "cache")},
        }
        (tmp_path / "lcm.yaml").write_text(yaml.safe_dump(lcm))
        assert "LCM-distilled 2 steps" in invoke(app, "lcm", "--config", tmp_path / "lcm.yaml")
        shutil.rmtree(kd["out"])

        # 5. W8A16: int8 U-Net weights, 16-bit activations, text encoder and VAE in float16.
        monitor.stage("quantize")
        quantized = tmp_path / "w8a16"
        invoke(app, "quantize", "--model", lcm["out"], "--out", quantized)
        shutil.rmtree(lcm["out"])

        # 6. One 2-step image from the quantized model.
        monitor.stage("generate")
        images = tmp_path / "images"
        output = invoke(
            app,
            "generate",
            "a bright square on a colour field",
            "--model",
            quantized,
            "--out",
            images,
            "--size",
            SIZE,
            "--steps",
            2,
        )
        assert "LCMScheduler, 2 steps" in output

    seconds = time.monotonic() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    stages = ", ".join(f"{stage} {rss / GB:.1f}" for stage, rss in monitor.rss.items())
    print(
        f"\nreal scale: peak RSS {peak_rss / GB:.2f} GB (sampled per stage: {stages}); "
        f"peak disk {monitor.disk / GB:.2f} GB; wall {seconds / 60:.1f} min"
    )

    image = Image.open(images / "00000.png")
    assert image.size == (SIZE, SIZE)
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 1.0, "the generated image is constant"
    assert peak_rss < MAX_RSS
    assert monitor.disk < MAX_DISK
    assert seconds < MAX_SECONDS
