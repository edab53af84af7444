"""Fixtures of the review tests: toy data, and review databases on SQLite and on a PostgreSQL
server started for the session."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageFilter
from review_helpers import PostgresCluster, toy_prompts, write_generation_folder, write_toy_dataset

from edgefusion.data.review_db import open_database


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (skipped, with the reason, where none can start)."""
    cluster = PostgresCluster()
    reason = cluster.start()
    if reason is not None:
        cluster.stop()
        pytest.skip(f"PostgreSQL cannot be started here: {reason}")
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A new empty review database: an SQLite file, or a database on the session's server."""
    if request.param == "sqlite":
        return str(tmp_path / "review.sqlite")
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def database(db_url):
    db = open_database(db_url)
    yield db
    db.close()


@pytest.fixture(scope="session")
def toy_set(tmp_path_factory) -> Path:
    """Ten toy renders with their captions, in the dataset format (like `data synthesize` output)."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "synt", n=10)


@pytest.fixture(scope="session")
def generation_folders(tmp_path_factory) -> list[Path]:
    """Three `edgefusion generate` folders over the same six prompts and seeds: exact renders
    ("toy:teacher"), blurred ones ("toy:edgefusion") and heavily blurred ones ("toy:bk-tiny")."""
    from edgefusion.toy.world import render

    root = tmp_path_factory.mktemp("generate")
    scenes = toy_prompts(6, seed=3)
    prompts = [text for _, text in scenes]
    renders = [render(scene, 64, seed=i) for i, (scene, _) in enumerate(scenes)]
    folders = []
    for model, radius in (("toy:teacher", 0), ("toy:edgefusion", 1.5), ("toy:bk-tiny", 4)):
        images = [im.filter(ImageFilter.GaussianBlur(radius)) if radius else im for im in renders]
        folders.append(write_generation_folder(root / model.split(":")[1], model, images, prompts))
    return folders
