"""Fixtures of the recipe tests: a micro SD teacher, a recipe file writer, and a counter of the
stage kinds that ran."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
from micro_models import random_unet, write_pipeline

from edgefusion.recipe.kinds import STAGE_KINDS


@pytest.fixture(scope="session")
def teacher_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved micro SD pipeline with a random 4-stage teacher U-Net."""
    return write_pipeline(tmp_path_factory.mktemp("teacher") / "sd", random_unet())


@pytest.fixture
def write_recipe(tmp_path: Path):
    """``write_recipe(text, name="recipe.yaml")``: the recipe file's path."""

    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How often each registered stage kind ran in this test, by kind name."""
    counter: Counter = Counter()
    for name, kind in list(STAGE_KINDS.items()):

        def counted(config, run=kind.run, name=name):
            counter[name] += 1
            return run(config)

        monkeypatch.setitem(STAGE_KINDS, name, dataclasses.replace(kind, run=counted))
    return counter
