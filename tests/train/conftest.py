"""Micro models and data for the training tests: a saved SD pipeline of random micro components
(the toy tokenizer, so captions tokenize), a toy imagefolder, and a clean accelerate state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from micro_models import IMAGE_SIZE, TEXT_WIDTH, micro_unet_config, random_unet, write_pipeline

from edgefusion.toy.dataset import write_toy_dataset
from edgefusion.train.config import load_config
from edgefusion.train.kd import KDConfig


@pytest.fixture
def micro() -> SimpleNamespace:
    """The micro builders: ``micro.unet(config=None, seed=0)``, ``micro.unet_config(widths)``,
    ``micro.write_pipeline(folder, unet)``, and ``micro.text_width``."""
    return SimpleNamespace(
        unet=random_unet, unet_config=micro_unet_config, write_pipeline=write_pipeline, text_width=TEXT_WIDTH
    )


@pytest.fixture(scope="session")
def teacher_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved micro SD pipeline with a random 4-stage teacher U-Net."""
    return write_pipeline(tmp_path_factory.mktemp("teacher") / "sd", random_unet())


@pytest.fixture(scope="session")
def toy_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 32 px toy shapes as an HF imagefolder (images + metadata.jsonl)."""
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy", n=12, size=32, progress=False)


@pytest.fixture
def flawed_folder(tmp_path: Path, toy_images: Path) -> Path:
    """The toy imagefolder with one corrupt image, one missing file, a row without caption and a
    broken metadata line: 12 rows + 1 broken, 10 usable, 9 decodable."""
    folder = tmp_path / "flawed"
    shutil.copytree(toy_images, folder)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / rows[2]["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / rows[5]["file_name"]).unlink()
    del rows[7]["text"]
    lines = [json.dumps(row) for row in rows] + ['{"file_name": broken']
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def kd_config(tmp_path: Path, teacher_pipeline: Path, toy_images: Path):
    """``kd_config(*overrides)``: a micro BK-Tiny distillation config writing under ``tmp_path``."""

    def make(*overrides: str) -> KDConfig:
        base = [
            f"teacher={teacher_pipeline}",
            "variant=tiny",
            f"data.path={toy_images}",
            f"data.resolution={IMAGE_SIZE}",
            f"out={tmp_path / 'out'}",
            f"run_dir={tmp_path / 'run'}",
            "train.steps=4",
            "train.batch_size=2",
            "train.learning_rate=1e-3",
            "train.checkpoint_every=2",
            "train.ema_decay=0.9",
        ]
        return load_config(KDConfig, None, [*base, *overrides])

    return make
