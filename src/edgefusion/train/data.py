"""Training data for every stage: image-text pairs, their frozen encodings, a deterministic stream.

Sources (BK-SDM's layout and ours): an HF ``imagefolder`` (image files and
``metadata.jsonl`` rows with ``file_name`` and a caption column) or WebDataset ``.tar`` shards
(members ``KEY.png``/``KEY.jpg``... beside ``KEY.txt`` or ``KEY.json``). Samples that cannot be
used are skipped and counted, never fatal: ``missing`` (listed but absent), ``corrupt``
(undecodable image or metadata), ``no_caption``, ``outside`` (a ``file_name`` leading out of the
folder: absolute, ``..`` or a symlink out; never read).

The VAE and text encoder are frozen in distillation, so their outputs can be computed once: the
optional cache stores each image's scaled VAE posterior (mean and std, so training can still sample
latents as BK-SDM does) and each caption's text embedding as safetensors shards, plus every
caption's token ids (``token_ids.safetensors``) for a run that fine-tunes the text encoder.
Training from the cache skips both encoders.

Determinism: micro-batch ``b`` of rank ``r`` is a fixed slice of an endless stream of seeded
per-epoch permutations, and its noise comes from a generator seeded by ``(seed, b, r)``. A run
resumed at step ``s`` therefore sees exactly the batches and noise of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from edgefusion.atomic import atomic_file, atomic_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import IMAGE_EXTENSIONS
from edgefusion.paths import member_path
from edgefusion.train.config import DataConfig

SKIP_REASONS = ("missing", "corrupt", "no_caption", "outside")
METADATA_FILE = "metadata.jsonl"
CACHE_MANIFEST = "manifest.json"
CACHE_UNCOND = "uncond.safetensors"
CACHE_TOKEN_IDS = "token_ids.safetensors"
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class SampleRef:
    """One usable pair: its caption, and where the image bytes are (a file, or a byte range of a
    ``.tar`` shard when ``offset >= 0``)."""

    caption: str
    file: str
    offset: int = -1
    size: int = 0


@dataclass
class FrozenEncoders:
    """The pipeline parts that turn a pair into the U-Net's inputs; never trained."""

    tokenizer: Any
    text_encoder: Any
    vae: Any


def index_samples(path: str | Path, caption_column: str = "text") -> tuple[list[SampleRef], Counter[str]]:
    """Every usable pair under ``path`` (imagefolder, one ``.tar`` shard or a folder of shards), in
    a fixed order, and the count of skipped samples per reason. Images are not decoded here."""
    path = Path(path)
    if not path.exists():
        raise EdgefusionError(
            f"dataset {path} does not exist: set data.path to an imagefolder or .tar shards"
        )
    if path.is_dir() and (path / METADATA_FILE).is_file():
        return _index_imagefolder(path, caption_column)
    shards = [path] if path.is_file() else sorted(path.glob("*.tar"))
    if not shards or any(s.suffix != ".tar" for s in shards):
        raise EdgefusionError(
            f"{path} is neither an imagefolder (no {METADATA_FILE}) nor WebDataset .tar shards: "
            "write one with `edgefusion toy data` or point data.path at a folder of .tar files"
        )
    refs: list[SampleRef] = []
    skipped: Counter[str] = Counter()
    for shard in shards:
        _index_shard(shard, caption_column, refs, skipped)
    return refs, skipped


def _index_imagefolder(folder: Path, caption_column: str) -> tuple[list[SampleRef], Counter[str]]:
    refs: list[SampleRef] = []
    skipped: Counter[str] = Counter()
    with (folder / METADATA_FILE).open(encoding="utf-8") as rows:
        for line in rows:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file_name = row["file_name"]
            except (json.JSONDecodeError, KeyError, TypeError):
                skipped["corrupt"] += 1
                continue
            caption = row.get(caption_column)
            path, unsafe = member_path(folder, file_name) if isinstance(file_name, str) else (None, "bad")
            if not isinstance(caption, str):
                skipped["no_caption"] += 1
            elif unsafe:
                skipped["outside" if isinstance(file_name, str) else "corrupt"] += 1
            elif not path.is_file():
                skipped["missing"] += 1
            else:
                refs.append(SampleRef(caption, str(path)))
    return refs, skipped


def _index_shard(shard: Path, caption_column: str, refs: list[SampleRef], skipped: Counter[str]) -> None:
    """Group a shard's members by WebDataset key (the path up to the first dot of its basename).
    The caption is ``KEY.json``'s ``caption_column`` when it has one, else ``KEY.txt``."""
    images: dict[str, tarfile.TarInfo] = {}
    texts: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                directory, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not member.isfile() or not dot:
                    continue
                key, ext = f"{directory}/{stem}" if directory else stem, ext.lower()
                if f".{ext}" in IMAGE_EXTENSIONS:
                    images[key] = member
                elif ext in ("txt", "json"):
                    texts.setdefault(key, {})[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as err:
        raise EdgefusionError(
            f"{shard} is not a readable uncompressed tar ({err}): WebDataset shards must be plain .tar files"
        ) from err
    for key in sorted(images.keys() | texts.keys()):
        caption = _shard_caption(texts.get(key, {}), caption_column)
        if key not in images:
            skipped["missing"] += 1
        elif caption is None:
            skipped["no_caption"] += 1
        else:
            member = images[key]
            refs.append(SampleRef(caption, str(shard), member.offset_data, member.size))


def _shard_caption(texts: dict[str, bytes], caption_column: str) -> str | None:
    try:
        caption = json.loads(texts["json"].decode("utf-8")).get(caption_column) if "json" in texts else None
        if caption is None and "txt" in texts:
            caption = texts["txt"].decode("utf-8").strip()
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return caption if isinstance(caption, str) else None


def read_image(ref: SampleRef) -> Image.Image | None:
    """The decoded RGB image of ``ref``, or None when it cannot be read or decoded."""
    try:
        if ref.offset < 0:
            data = Path(ref.file).read_bytes()
        else:
            with open(ref.file, "rb") as shard:
                shard.seek(ref.offset)
                data = shard.read(ref.size)
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def image_to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Center crop to a square and resize to ``resolution`` (BK-SDM's center-crop transform),
    as a ``3 x R x R`` tensor in [-1, 1]."""
    square = ImageOps.fit(image, (resolution, resolution), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(square, dtype=np.float32).copy())
    return pixels.permute(2, 0, 1) / 127.5 - 1.0


class ImageTextDataset(Dataset):
    """Decoded pairs. A corrupt image is replaced by the next decodable one, so batches keep their
    size; each item's ``skipped`` says how many corrupt images were passed over to reach it."""

    def __init__(self, refs: list[SampleRef], resolution: int) -> None:
        if not refs:
            raise EdgefusionError("the dataset holds no usable image-caption pair: check data.path")
        self.refs, self.resolution = refs, resolution

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for skipped in range(len(self.refs)):
            ref = self.refs[(index + skipped) % len(self.refs)]
            image = read_image(ref)
            if image is not None:
                return {
                    "pixel_values": image_to_tensor(image, self.resolution),
                    "text": ref.caption,
                    "skipped": skipped,
                }
        raise EdgefusionError("no image in the dataset can be decoded: check the files under data.path")


class LatentCacheDataset(Dataset):
    """Cached encodings (see :func:`build_latent_cache`), read lazily from memory-mapped shards,
    with each caption's ``input_ids`` when ``token_ids`` (one row per cached sample) is given."""

    def __init__(
        self, cache_dir: Path, manifest: dict[str, Any], token_ids: torch.Tensor | None = None
    ) -> None:
        self.files = [str(cache_dir / shard["file"]) for shard in manifest["shards"]]
        self.ends = np.cumsum([shard["n"] for shard in manifest["shards"]])
        self.token_ids = token_ids
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shard = int(np.searchsorted(self.ends, index, side="right"))
        row = index - (int(self.ends[shard - 1]) if shard else 0)
        if shard not in self._handles:
            self._handles[shard] = safe_open(self.files[shard], framework="pt")
        handle = self._handles[shard]
        item = {key: handle.get_slice(key)[row] for key in ("latent_mean", "latent_std", "text_embeds")}
        if self.token_ids is not None:
            item["input_ids"] = self.token_ids[index].long()
        return item

    def __getstate__(self) -> dict[str, Any]:
        # File handles do not cross into DataLoader workers; each worker opens its own.
        return {**self.__dict__, "_handles": {}}


@dataclass
class TrainingData:
    """A stage's training data: the dataset, how a batch becomes (latents, text embeddings or token
    ids), the empty prompt's embedding and token ids (caption dropout, classifier-free guidance),
    and the skip counts."""

    dataset: Dataset
    uncond_embeds: torch.Tensor
    skipped: Counter[str]
    encoders: FrozenEncoders | None
    sample_posterior: bool = True
    tokenizer: Any = None

    def skip_counts(self, corrupt_in_stream: int) -> dict[str, int]:
        """Samples skipped per reason: those indexing dropped, plus the corrupt ones the training
        stream passed over (``LoopResult.skipped_corrupt``)."""
        skipped = Counter(self.skipped)
        skipped["corrupt"] += corrupt_in_stream
        return {reason: skipped[reason] for reason in SKIP_REASONS}

    @torch.no_grad()
    def latents_and_text(
        self, batch: dict[str, Any], gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents (sampled from each image's VAE posterior, or its mean) and the caption
        embeddings."""
        if self.encoders is None:
            text = batch["text_embeds"]
        else:
            text = encode_text(self.encoders.tokenizer, self.encoders.text_encoder, batch["text"])
        return self._latents(batch, gen), text.float()

    @torch.no_grad()
    def latents_and_ids(
        self, batch: dict[str, Any], gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents as :meth:`latents_and_text`, and the captions' token ids (for a text
        encoder that trains, so its states cannot come from a cache)."""
        if "input_ids" in batch:
            ids = batch["input_ids"]
        else:
            ids = tokenize(self.tokenizer, batch["text"])
        return self._latents(batch, gen), ids.to(self.uncond_embeds.device)

    @property
    def uncond_ids(self) -> torch.Tensor:
        """The empty prompt's token ids, ``[1, length]``."""
        return tokenize(self.tokenizer, [""]).to(self.uncond_embeds.device)

    def _latents(self, batch: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
        if self.encoders is None:
            mean, std = batch["latent_mean"], batch["latent_std"]
        else:
            mean, std = encode_images(self.encoders.vae, batch["pixel_values"])
        if not self.sample_posterior:
            return mean.float()
        noise = torch.randn(mean.shape, generator=gen).to(mean.device)
        return mean.float() + std.float() * noise


def generator_for(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a well-mixed hash of ``keys`` (e.g. seed, micro-batch, rank)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def batch_indices(
    n: int, batch_size: int, seed: int, start: int = 0, num_replicas: int = 1, rank: int = 0
) -> Iterator[list[int]]:
    """Endless micro-batches of dataset indices, from micro-batch ``start`` on.

    The stream is the concatenation of per-epoch permutations seeded by ``(seed, epoch)``; global
    micro-batch ``b`` covers stream positions ``[b R B, (b + 1) R B)`` and rank ``r`` takes its
    ``r``-th slice of ``B``, so the ranks together see each epoch once.
    """
    epoch_of_perm, perm = -1, torch.empty(0, dtype=torch.long)
    micro = start
    while True:
        first = (micro * num_replicas + rank) * batch_size
        batch = []
        for position in range(first, first + batch_size):
            epoch, offset = divmod(position, n)
            if epoch != epoch_of_perm:
                perm = torch.randperm(n, generator=generator_for(seed, epoch, 0x5EED))
                epoch_of_perm = epoch
            batch.append(int(perm[offset]))
        yield batch
        micro += 1


def make_loader(
    dataset: Dataset, batch_size: int, seed: int, start: int, num_replicas: int, rank: int, num_workers: int
) -> DataLoader:
    """A DataLoader over :func:`batch_indices` (not re-sharded by accelerate: it is already per rank)."""
    stream = batch_indices(len(dataset), batch_size, seed, start, num_replicas, rank)
    return DataLoader(dataset, batch_sampler=stream, num_workers=num_workers)


def load_frozen_encoders(pipeline: Path, device: torch.device, dtype: torch.dtype) -> FrozenEncoders:
    """Tokenizer, text encoder and VAE of a diffusers SD pipeline folder, frozen, on ``device``."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    for part in ("tokenizer", "text_encoder", "vae"):
        if not (pipeline / part).is_dir():
            raise EdgefusionError(
                f"pipeline {pipeline} has no {part}/ folder: give a full SD pipeline folder"
            )
    tokenizer = CLIPTokenizer.from_pretrained(pipeline, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(pipeline, subfolder="text_encoder", dtype=dtype)
    vae = AutoencoderKL.from_pretrained(pipeline, subfolder="vae", dtype=dtype)
    for model in (text_encoder, vae):
        model.requires_grad_(False).eval().to(device)
    return FrozenEncoders(tokenizer, text_encoder, vae)


def tokenize(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """Token ids as the SD pipeline makes them: padded and truncated to the tokenizer's length."""
    return tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


@torch.no_grad()
def encode_text(tokenizer: Any, text_encoder: Any, prompts: list[str]) -> torch.Tensor:
    """Token states as the SD pipeline computes them: the last hidden state of the text encoder."""
    return text_encoder(tokenize(tokenizer, prompts).to(text_encoder.device))[0]


@torch.no_grad()
def encode_images(vae: Any, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the VAE posterior, both times the VAE's scaling factor (SD's latent scale)."""
    posterior = vae.encode(pixel_values.to(vae.device, vae.dtype)).latent_dist
    scale = vae.config.scaling_factor
    return posterior.mean * scale, posterior.std * scale


def native_resolution(pipeline: Path) -> int:
    """The image side a pipeline was made for: its U-Net's sample size times the VAE's downscale."""
    unet = json.loads((pipeline / "unet" / "config.json").read_text(encoding="utf-8"))
    vae = json.loads((pipeline / "vae" / "config.json").read_text(encoding="utf-8"))
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def drop_captions(cond: torch.Tensor, empty: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    """``cond`` (text embeddings or token ids) with each sample's caption replaced by the empty
    prompt's ``empty`` at ``rate``: the unconditional branch classifier-free guidance samples."""
    if rate <= 0:
        return cond
    drop = (torch.rand(len(cond), generator=gen) < rate).to(cond.device)
    return torch.where(drop.view(-1, *[1] * (cond.dim() - 1)), empty.to(cond), cond)


def prepare_training_data(
    cfg: DataConfig, pipeline: Path, accelerator: Any, dtype: torch.dtype, token_ids: bool = False
) -> TrainingData:
    """The training data of ``cfg``; with ``cfg.cache`` set, the cache is built first if needed
    (by the main process; the others wait, then read it) and the encoders are not kept.
    ``token_ids``: batches also carry each caption's token ids (a text encoder that trains)."""
    resolution = cfg.resolution or native_resolution(pipeline)
    refs, skipped = index_samples(cfg.path, cfg.caption_column)
    if cfg.cache is None:
        encoders = load_frozen_encoders(pipeline, accelerator.device, dtype)
        uncond = encode_text(encoders.tokenizer, encoders.text_encoder, [""]).float()
        return TrainingData(
            ImageTextDataset(refs, resolution),
            uncond,
            skipped,
            encoders,
            cfg.sample_posterior,
            encoders.tokenizer,
        )
    cache_dir = Path(cfg.cache)
    fingerprint = cache_fingerprint(cfg, refs, pipeline, resolution)
    with accelerator.main_process_first():
        manifest = read_cache_manifest(cache_dir, fingerprint)
        if manifest is None:
            encoders = load_frozen_encoders(pipeline, accelerator.device, dtype)
            manifest = build_latent_cache(
                refs,
                skipped,
                encoders,
                cache_dir,
                fingerprint,
                resolution,
                cfg.cache_shard_size,
                cfg.num_workers,
            )
        tokenizer, ids = None, None
        if token_ids:
            from transformers import CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(pipeline, subfolder="tokenizer")
            ids = cached_token_ids(cache_dir, manifest, refs, tokenizer)
    uncond = _read_tensor(cache_dir / CACHE_UNCOND, "text_embeds").float().to(accelerator.device)
    return TrainingData(
        LatentCacheDataset(cache_dir, manifest, ids),
        uncond,
        Counter(manifest["skipped"]),
        None,
        cfg.sample_posterior,
        tokenizer,
    )


def cached_token_ids(
    cache_dir: Path, manifest: dict[str, Any], refs: list[SampleRef], tokenizer: Any
) -> torch.Tensor:
    """The token ids of every cached sample, in cache order. A cache built before caches held
    them gets them now when its rows are exactly the indexed samples (none was dropped as
    undecodable, so row ``i`` is sample ``i``); otherwise it has to be rebuilt."""
    file = cache_dir / CACHE_TOKEN_IDS
    if not file.is_file():
        if manifest["n"] != len(refs):
            raise EdgefusionError(
                f"latent cache {cache_dir} holds no token ids and skipped undecodable samples, so its "
                "rows cannot be matched to captions: delete it or set data.cache to a new folder"
            )
        captions = [r.caption for r in refs]
        ids = torch.cat([tokenize(tokenizer, captions[i : i + 4096]) for i in range(0, len(captions), 4096)])
        with atomic_file(file) as tmp:
            save_file({"input_ids": ids.to(torch.int32).contiguous()}, str(tmp))
    ids = _read_tensor(file, "input_ids")
    if len(ids) != manifest["n"]:
        raise EdgefusionError(f"{file} does not match the cache's {manifest['n']} samples: delete the cache")
    return ids


def cache_fingerprint(cfg: DataConfig, refs: list[SampleRef], pipeline: Path, resolution: int) -> str:
    """What a cache depends on: the pair list, the resolution, and the frozen encoders' files."""
    digest = hashlib.sha256()
    pairs = [(r.caption, os.path.relpath(r.file, cfg.path), r.offset) for r in refs]
    digest.update(json.dumps([cfg.caption_column, resolution, pairs]).encode())
    for part in ("tokenizer", "text_encoder", "vae"):
        for file in sorted(p for p in (pipeline / part).rglob("*") if p.is_file()):
            digest.update(f"{part}/{file.relative_to(pipeline / part)}".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def read_cache_manifest(cache_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of a cache built for ``fingerprint``; None when there is no cache yet."""
    manifest_file = cache_dir / CACHE_MANIFEST
    if not cache_dir.exists():
        return None
    if not manifest_file.is_file():
        raise EdgefusionError(f"{cache_dir} exists but is not a latent cache: choose another data.cache")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    if manifest.get("format") != _CACHE_FORMAT or manifest.get("fingerprint") != fingerprint:
        raise EdgefusionError(
            f"latent cache {cache_dir} was built from other data, resolution or encoders: delete it "
            "or set data.cache to a new folder"
        )
    return manifest


def build_latent_cache(
    refs: list[SampleRef],
    skipped: Counter[str],
    encoders: FrozenEncoders,
    cache_dir: Path,
    fingerprint: str,
    resolution: int,
    shard_size: int,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Encode every decodable pair once and write the cache folder atomically; corrupt images are
    skipped and added to ``skipped``. Returns the manifest."""
    skipped = Counter(skipped)
    loader = DataLoader(
        _DecodedPairs(refs, resolution), batch_size=64, num_workers=num_workers, collate_fn=_drop_undecodable
    )
    shards: list[dict[str, Any]] = []
    pending: dict[str, list[torch.Tensor]] = {"latent_mean": [], "latent_std": [], "text_embeds": []}
    token_ids: list[torch.Tensor] = []
    with atomic_output_dir(cache_dir) as staging:
        for batch in tqdm(loader, desc="latent cache", unit="batch", mininterval=10):
            skipped["corrupt"] += batch["corrupt"]
            if not batch["text"]:
                continue
            mean, std = encode_images(encoders.vae, batch["pixel_values"])
            text = encode_text(encoders.tokenizer, encoders.text_encoder, batch["text"])
            token_ids.append(tokenize(encoders.tokenizer, batch["text"]).to(torch.int32))
            pending["latent_mean"].append(mean.float().cpu())
            pending["latent_std"].append(std.float().cpu())
            pending["text_embeds"].append(text.half().cpu())
            while sum(len(t) for t in pending["text_embeds"]) >= shard_size:
                _flush_shard(staging, pending, shards, shard_size)
        if pending["text_embeds"]:
            _flush_shard(staging, pending, shards, shard_size)
        if not shards:
            raise EdgefusionError("no image in the dataset can be decoded: check the files under data.path")
        uncond = encode_text(encoders.tokenizer, encoders.text_encoder, [""]).half().cpu().contiguous()
        save_file({"text_embeds": uncond}, str(staging / CACHE_UNCOND))
        save_file({"input_ids": torch.cat(token_ids).contiguous()}, str(staging / CACHE_TOKEN_IDS))
        manifest = {
            "format": _CACHE_FORMAT,
            "fingerprint": fingerprint,
            "resolution": resolution,
            "n": sum(s["n"] for s in shards),
            "shards": shards,
            "skipped": {reason: skipped[reason] for reason in SKIP_REASONS},
        }
        (staging / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


class _DecodedPairs(Dataset):
    def __init__(self, refs: list[SampleRef], resolution: int) -> None:
        self.refs, self.resolution = refs, resolution

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str] | None:
        image = read_image(self.refs[index])
        return None if image is None else (image_to_tensor(image, self.resolution), self.refs[index].caption)


def _drop_undecodable(items: list[tuple[torch.Tensor, str] | None]) -> dict[str, Any]:
    good = [item for item in items if item is not None]
    return {
        "pixel_values": torch.stack([image for image, _ in good]) if good else torch.empty(0),
        "text": [caption for _, caption in good],
        "corrupt": len(items) - len(good),
    }


def _flush_shard(
    staging: Path, pending: dict[str, list[torch.Tensor]], shards: list[dict[str, Any]], shard_size: int
) -> None:
    joined = {key: torch.cat(parts) for key, parts in pending.items()}
    file = f"shard-{len(shards):05d}.safetensors"
    save_file({key: t[:shard_size].contiguous() for key, t in joined.items()}, str(staging / file))
    shards.append({"file": file, "n": min(shard_size, len(joined["text_embeds"]))})
    for key, t in joined.items():
        pending[key] = [t[shard_size:]] if len(t) > shard_size else []


def _read_tensor(file: Path, key: str) -> torch.Tensor:
    with safe_open(str(file), framework="pt") as handle:
        return handle.get_tensor(key)
