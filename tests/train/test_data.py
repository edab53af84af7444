"""Training data: imagefolder and WebDataset shards, skipped samples counted, the latent cache,
and the deterministic batch stream."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from edgefusion.errors import EdgefusionError
from edgefusion.train import data as data_module
from edgefusion.train.config import DataConfig
from edgefusion.train.data import (
    ImageTextDataset,
    batch_indices,
    encode_images,
    encode_text,
    image_to_tensor,
    index_samples,
    load_frozen_encoders,
    prepare_training_data,
)

RESOLUTION = 16


def test_imagefolder_skips_and_counts_missing_corrupt_and_uncaptioned(flawed_folder: Path) -> None:
    refs, skipped = index_samples(flawed_folder)
    assert len(refs) == 10
    assert skipped == {"missing": 1, "no_caption": 1, "corrupt": 1}  # the broken metadata line
    dataset = ImageTextDataset(refs, RESOLUTION)
    items = [dataset[i] for i in range(len(dataset))]
    assert sum(item["skipped"] for item in items) == 1  # the corrupt image, passed over once
    assert all(item["pixel_values"].shape == (3, RESOLUTION, RESOLUTION) for item in items)
    assert items[2]["text"] == refs[3].caption  # the corrupt image's slot holds the next pair


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_webdataset_shards_skip_and_count_like_imagefolders(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "shard-000000.tar", "w") as tar:
        _member(tar, "a/000.png", _png((255, 0, 0)))
        _member(tar, "a/000.txt", b"a red thing")
        _member(tar, "a/000.json", json.dumps({"text": "a red square", "id": "000"}).encode())
        _member(tar, "a/001.png", b"garbage")
        _member(tar, "a/001.txt", b"a corrupt one")
        _member(tar, "a/002.txt", b"an image that is missing")
    with tarfile.open(shards / "shard-000001.tar", "w") as tar:
        _member(tar, "v1.2/003.png", _png((0, 0, 255)))  # key: the path up to the basename's first dot
        _member(tar, "v1.2/003.json", json.dumps({"text": "a blue square"}).encode())
        _member(tar, "v1.2/003.txt", b"a blue thing")  # the json's caption column wins
        _member(tar, "004.png", _png((0, 255, 0)))
    refs, skipped = index_samples(shards)
    assert [ref.caption for ref in refs] == ["a red square", "a corrupt one", "a blue square"]
    assert skipped == {"missing": 1, "no_caption": 1}
    dataset = ImageTextDataset(refs, RESOLUTION)
    first, corrupt_slot = dataset[0], dataset[1]
    assert corrupt_slot["skipped"] == 1 and corrupt_slot["text"] == "a blue square"
    assert torch.allclose(first["pixel_values"][0], torch.ones(RESOLUTION, RESOLUTION))  # red
    assert torch.allclose(corrupt_slot["pixel_values"][2], torch.ones(RESOLUTION, RESOLUTION))  # blue


def test_unknown_layouts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EdgefusionError, match="does not exist"):
        index_samples(tmp_path / "nowhere")
    with pytest.raises(EdgefusionError, match="neither an imagefolder"):
        index_samples(tmp_path)


def test_image_to_tensor_center_crops_to_a_square_in_minus_one_one() -> None:
    image = Image.new("RGB", (48, 32), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 4, 32))  # a black band well outside the central square
    pixels = image_to_tensor(image, RESOLUTION)
    assert pixels.shape == (3, RESOLUTION, RESOLUTION)
    assert torch.equal(pixels, torch.ones_like(pixels))


def test_file_names_leading_out_of_the_folder_are_skipped_never_read(
    toy_images: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "data"
    shutil.copytree(toy_images, folder)
    secret = tmp_path / "secret.png"
    shutil.copy(next(folder.glob("*.png")), secret)
    (folder / "link.png").symlink_to(secret)
    hostile = [str(secret), "../secret.png", "sub/../../secret.png", "link.png", None]
    with (folder / "metadata.jsonl").open("a") as f:
        for name in hostile:
            f.write(json.dumps({"file_name": name, "text": "a stolen file"}) + "\n")
    refs, skipped = index_samples(folder)
    assert len(refs) == 12 and all(Path(ref.file).parent == folder.resolve() for ref in refs)
    assert skipped == {"outside": 4, "corrupt": 1}


def test_latent_cache_holds_the_encodings_and_the_skip_counts(
    flawed_folder: Path, teacher_pipeline: Path, tmp_path: Path, monkeypatch
) -> None:
    accelerator = Accelerator(cpu=True)
    cfg = DataConfig(
        path=str(flawed_folder), resolution=RESOLUTION, cache=str(tmp_path / "cache"), cache_shard_size=3
    )
    data = prepare_training_data(cfg, teacher_pipeline, accelerator, torch.float32)
    assert data.encoders is None and len(data.dataset) == 9
    assert data.skip_counts(0) == {"missing": 1, "no_caption": 1, "corrupt": 2, "outside": 0}
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert [shard["n"] for shard in manifest["shards"]] == [3, 3, 3]

    encoders = load_frozen_encoders(teacher_pipeline, torch.device("cpu"), torch.float32)
    refs, _ = index_samples(flawed_folder)
    decodable = [ref for i, ref in enumerate(refs) if i != 2]
    image = image_to_tensor(data_module.read_image(decodable[4]), RESOLUTION)[None]
    mean, std = encode_images(encoders.vae, image)
    text = encode_text(encoders.tokenizer, encoders.text_encoder, [decodable[4].caption])
    item = data.dataset[4]
    assert torch.allclose(item["latent_mean"], mean[0], atol=1e-6)
    assert torch.allclose(item["latent_std"], std[0], atol=1e-6)
    assert torch.allclose(item["text_embeds"].float(), text[0], atol=2e-3)  # stored as fp16
    uncond = encode_text(encoders.tokenizer, encoders.text_encoder, [""])
    assert torch.allclose(data.uncond_embeds, uncond, atol=2e-3)

    # A second run reuses the cache; other settings are refused rather than silently mixed.
    monkeypatch.setattr(data_module, "build_latent_cache", lambda *a, **k: pytest.fail("cache rebuilt"))
    assert len(prepare_training_data(cfg, teacher_pipeline, accelerator, torch.float32).dataset) == 9
    cfg.resolution = 8
    with pytest.raises(EdgefusionError, match="built from other data, resolution or encoders"):
        prepare_training_data(cfg, teacher_pipeline, accelerator, torch.float32)


def test_latents_are_sampled_from_the_posterior_with_the_step_generator(
    toy_images: Path, teacher_pipeline: Path
) -> None:
    cfg = DataConfig(path=str(toy_images), resolution=RESOLUTION)
    data = prepare_training_data(cfg, teacher_pipeline, Accelerator(cpu=True), torch.float32)
    batch = torch.utils.data.default_collate([data.dataset[0], data.dataset[1]])
    a, text = data.latents_and_text(batch, torch.Generator().manual_seed(1))
    b, _ = data.latents_and_text(batch, torch.Generator().manual_seed(1))
    c, _ = data.latents_and_text(batch, torch.Generator().manual_seed(2))
    assert a.shape == (2, 4, 8, 8) and text.shape == (2, 77, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_posterior_means_are_deterministic_and_are_what_samples_center_on(
    toy_images: Path, teacher_pipeline: Path
) -> None:
    cfg = DataConfig(path=str(toy_images), resolution=RESOLUTION, sample_posterior=False)
    data = prepare_training_data(cfg, teacher_pipeline, Accelerator(cpu=True), torch.float32)
    batch = torch.utils.data.default_collate([data.dataset[0], data.dataset[1]])
    mean, _ = data.latents_and_text(batch, torch.Generator().manual_seed(1))
    assert torch.equal(mean, data.latents_and_text(batch, torch.Generator().manual_seed(2))[0])
    data.sample_posterior = True
    samples = torch.stack(
        [data.latents_and_text(batch, torch.Generator().manual_seed(s))[0] for s in range(64)]
    )
    assert not torch.equal(samples[0], mean)
    spread = samples.std(0).mean()
    assert (samples.mean(0) - mean).abs().mean() < spread / 4


def test_batch_stream_is_seeded_resumable_and_split_across_ranks() -> None:
    n, size = 10, 3
    stream = list(itertools.islice(batch_indices(n, size, seed=5), 20))
    assert stream[:4] == list(itertools.islice(batch_indices(n, size, seed=5), 4))
    assert stream[7:12] == list(itertools.islice(batch_indices(n, size, seed=5, start=7), 5))
    flat = [i for batch in stream for i in batch]
    for epoch in range(6):  # every epoch is a permutation of the dataset
        assert sorted(flat[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert flat[:n] != flat[n : 2 * n]
    ranks = [list(itertools.islice(batch_indices(n, size, 5, 0, 2, r), 10)) for r in (0, 1)]
    together = [i for b in range(10) for r in (0, 1) for i in ranks[r][b]]
    assert together == flat[: len(together)]
