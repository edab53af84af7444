"""Properties over arbitrary input, checked with hypothesis: a dataset file name never resolves
outside its folder, and the data runner accounts for every metadata row exactly once."""

from __future__ import annotations

import io
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edgefusion.data.dataset import iter_rows, read_stats, safe_id
from edgefusion.data.filter import FilterConfig, filter_images
from edgefusion.data.ingest import ingest
from edgefusion.data.runner import RunOptions
from edgefusion.paths import member_path, resolved

FEW = settings(max_examples=40, deadline=None)

# Names that mean something in the folder built below, and the pieces a hostile name is made of.
KNOWN = ["inside.png", "sub", "sub/x.png", "link_in", "link_out", "dir_out", "loop", "outside", "secret.png"]
PIECES = st.sampled_from([*KNOWN, "..", ".", "", "~", "\x00", "/", "é", "..."]) | st.text(max_size=6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A dataset folder with files, a subfolder, and symlinks that stay in, lead out or loop."""
    root = tmp_path_factory.mktemp("member")
    data, outside = root / "data", root / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (data / "inside.png").write_bytes(b"png")
    (data / "sub" / "x.png").write_bytes(b"png")
    (data / "link_in").symlink_to(data / "inside.png")
    (data / "link_out").symlink_to(outside / "secret.png")
    (data / "dir_out").symlink_to(outside)
    (data / "loop").symlink_to(data / "loop")
    return data


names = (
    st.text()
    | st.lists(PIECES, max_size=6).map("/".join)
    | st.lists(PIECES, max_size=6).map(lambda parts: "/" + "/".join(parts))
    | st.integers(200, 5000).map(lambda n: "a" * n)
    | st.integers(50, 2000).map(lambda n: "sub/" * n + "x.png")
)


@FEW
@given(name=names)
def test_member_path_never_leaves_the_folder(folder, name):
    path, reason = member_path(folder, name)
    assert (path is None) != (reason is None)
    if path is not None:
        assert resolved(path).is_relative_to(resolved(folder))
    else:
        assert isinstance(reason, str) and reason


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
ROW_KINDS = [
    "valid",
    "missing file",
    "corrupt image",
    "null name",
    "absent name",
    "number name",
    "absent caption",
    "duplicate name",
    "not an object",
    "bad json",
]
rows_strategy = st.lists(
    st.tuples(st.sampled_from(ROW_KINDS), st.sampled_from(["a", "b", None])), max_size=12
)


def _write_dataset(folder: Path, rows: list[tuple[str, str | None]]) -> list[str]:
    """Write the metadata lines (and files) of ``rows``; return the id each row's item gets."""
    lines, expected, names = [], [], []
    for index, (kind, given_id) in enumerate(rows):
        number = index + 1
        name = f"img{index}.png"
        row: dict = {"text": f"caption {index}"}
        if given_id is not None:
            row["id"] = given_id
        if kind in ("valid", "absent caption"):
            (folder / name).write_bytes(PNG)
        elif kind == "corrupt image":
            (folder / name).write_bytes(b"\x89PNG but not really")
        elif kind == "duplicate name" and names:
            name = names[0]
        elif kind == "duplicate name":
            (folder / name).write_bytes(PNG)
        if kind == "absent caption":
            del row["text"]
        row["file_name"] = {"null name": None, "number name": 7}.get(kind, name)
        if kind == "absent name":
            del row["file_name"]
        names.append(name)
        line = {"not an object": json.dumps([row]), "bad json": "{'file_name': "}.get(kind, json.dumps(row))
        lines.append(line)
        named = kind not in ("null name", "absent name", "number name", "not an object", "bad json")
        expected.append(safe_id(given_id or Path(name).stem) if named else f"line-{number:08d}")
    (folder / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return expected


def _base_id(item_id: str) -> str:
    """A duplicate id is renamed ``ID~N`` when it is rejected."""
    return re.sub(r"~\d+$", "", item_id)


# Stages that read a dataset folder: ingest (its own reader) and filter (the shared runner's).
STAGES = {
    "ingest": lambda source, out, options: ingest(source, out, options=options),
    "filter": lambda source, out, options: filter_images(source, out, FilterConfig(min_side=0), options),
}


@FEW
@given(rows=rows_strategy)
def test_every_row_is_kept_or_rejected_exactly_once(rows):
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        expected = _write_dataset(data, rows)
        for stage, run in STAGES.items():
            out = Path(tmp) / stage
            run(data, out, RunOptions(progress=False, chunk_size=4))
            stats = read_stats(out)
            kept, rejected = list(iter_rows(out)), list(iter_rows(out, "rejects.jsonl"))
            counts = (stats["samples_in"], stats["kept"], stats["rejected"])
            assert counts == (len(rows), len(kept), len(rejected)), stage
            assert Counter(_base_id(r["id"]) for r in kept + rejected) == Counter(expected), stage
            assert all(isinstance(r["reason"], str) and r["reason"] for r in rejected), stage
            assert sum(stats["reject_reasons"].values()) == len(rejected), stage
            files = [r["file_name"] for r in kept]  # one file per kept sample, none shared
            assert len(set(files)) == len(files) and all((out / f).is_file() for f in files), stage
