"""A small CLIP BPE tokenizer for the toy world, cut from the real CLIP BPE.

The real CLIP vocabulary has 49,408 tokens; an embedding table that size would dwarf a 1M
parameter text encoder. We keep CLIP's byte-level BPE and its merge ranks, but only the merges
that the toy corpus actually uses: every word of that corpus tokenizes exactly as real CLIP
tokenizes it, and any other word still tokenizes (into smaller pieces, down to bytes), because
all 512 byte symbols stay in the vocabulary. The result is a standard ``CLIPTokenizer``
(vocab.json + merges.txt) that plain transformers loads.

The real merges come from ``bpe_simple_vocab_16e6.txt.gz``, which ships inside the
open_clip_torch wheel; :func:`build_toy_tokenizer` reads it from a path or from that wheel.
"""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from pathlib import Path

from edgefusion.errors import EdgefusionError

_CLIP_MERGE_COUNT = 49152 - 256 - 2  # as in CLIP's SimpleTokenizer
# CLIP's pre-tokenizer pattern, restricted to ASCII letters (the toy corpus is ASCII).
_WORD_RE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")
TOKENIZER_DIR = Path(__file__).parent / "tokenizer"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's / GPT-2's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def read_clip_merges(bpe_path: str | Path) -> list[tuple[str, str]]:
    """Merges of the real CLIP BPE from ``bpe_simple_vocab_16e6.txt.gz`` or the open_clip wheel."""
    path = Path(bpe_path)
    if not path.exists():
        raise EdgefusionError(f"BPE file {path} not found; pass the open_clip_torch wheel or its bpe .txt.gz")
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            name = next((n for n in wheel.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz")), None)
            if name is None:
                raise EdgefusionError(f"{path} holds no bpe_simple_vocab_16e6.txt.gz")
            raw = gzip.decompress(wheel.read(name)).decode("utf-8")
    else:
        raw = gzip.open(path, "rt", encoding="utf-8").read()
    lines = raw.split("\n")[1 : _CLIP_MERGE_COUNT + 1]
    return [tuple(line.split()) for line in lines]


def _bpe_merges_used(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """Run CLIP's BPE on one word and return the merges it applies, in order."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(parts) > 1:
        pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        used.append(best)
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return used


def build_toy_tokenizer(bpe_path: str | Path, corpus: list[str], out_dir: str | Path) -> Path:
    """Write a CLIPTokenizer whose merges are the real CLIP merges the ``corpus`` needs."""
    merges = read_clip_merges(bpe_path)
    ranks = {m: i for i, m in enumerate(merges)}
    byte_encoder = _bytes_to_unicode()
    words = set()
    for text in corpus:
        for w in _WORD_RE.findall(text.lower()):
            words.add("".join(byte_encoder[b] for b in w.encode("utf-8")))
    used = set()
    for w in words:
        used.update(_bpe_merges_used(w, ranks))
    kept = sorted(used, key=ranks.__getitem__)
    vocab = list(byte_encoder.values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in kept]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in kept) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return out


def load_toy_tokenizer(path: str | Path = TOKENIZER_DIR):
    """The shipped toy tokenizer as a transformers ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(path))
