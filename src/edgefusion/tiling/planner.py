"""Model-level tiling (MLT) of attention: how many query tiles, and the DRAM traffic it saves.

EdgeFusion (Sec. 4.2, Table 6) tiles the attention block so that the softmax's input and output
(S_in, S_out: query length x key length per head) never leave the NPU's SRAM; without tiling
they are stored to DRAM and loaded back twice, which is most of the block's time there. The
planner, after FlashAttention's rule of sizing blocks from on-chip memory, picks the fewest query
tiles whose working set fits SRAM: fewest, because every tile costs DMA set-up and engine
hand-offs (the paper's "communication overhead"), modelled here as ``tile_overhead_bytes`` of
extra traffic per tile.

One tile is ``rows`` query rows of one head. Its working set: the Q tile, the head's whole K and
V (kept resident while the head's tiles run, so loaded once), the score tile S_in, the softmax
tile S_out, and the output tile A.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from edgefusion.errors import EdgefusionError

DTYPE_BYTES = {
    "int8": 1,
    "int16": 2,
    "float16": 2,
    "fp16": 2,
    "bfloat16": 2,
    "bf16": 2,
    "float32": 4,
    "fp32": 4,
}
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_bytes(text: str | int) -> int:
    """``"2MiB"`` -> 2097152; also plain integers, kB/MB/GB and KiB/MiB/GiB (case-insensitive)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise EdgefusionError(f"cannot read {text!r} as a size; write e.g. 2MiB, 512KiB or 1048576")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def dtype_bytes(name: str) -> int:
    if name not in DTYPE_BYTES:
        raise EdgefusionError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[name]


@dataclass(frozen=True)
class AttentionShape:
    """One attention call: ``batch`` x ``heads`` heads, ``q_len`` queries against ``kv_len`` keys
    of ``head_dim``; activations (Q, K, V, A) and scores (S_in, S_out) in the given dtypes."""

    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    batch: int = 1
    act_dtype: str = "int16"
    score_dtype: str = "int16"

    def __post_init__(self) -> None:
        for name in ("heads", "q_len", "kv_len", "head_dim", "batch"):
            if getattr(self, name) < 1:
                raise EdgefusionError(f"attention {name} must be >= 1, got {getattr(self, name)}")
        dtype_bytes(self.act_dtype), dtype_bytes(self.score_dtype)

    @property
    def instances(self) -> int:
        """Independent (batch, head) attention problems; tiles never span two of them."""
        return self.batch * self.heads


def working_set_bytes(shape: AttentionShape, rows: int) -> int:
    """SRAM bytes to run ``rows`` query rows of one head: Q, A tiles; K, V whole; S_in, S_out tiles."""
    a, s = dtype_bytes(shape.act_dtype), dtype_bytes(shape.score_dtype)
    resident = 2 * shape.kv_len * shape.head_dim * a  # K and V
    per_row = 2 * shape.head_dim * a + 2 * shape.kv_len * s  # Q and A rows; S_in and S_out rows
    return resident + rows * per_row


def traffic_bytes(
    shape: AttentionShape, num_tiles: int | None, tile_overhead_bytes: int = 0
) -> dict[str, int]:
    """Modelled DRAM bytes of the attention block by tensor (the rows of the paper's Table 6).

    ``num_tiles=None``: untiled, S_in and S_out are each stored and loaded back once. Tiled: they
    stay on chip; every tile adds ``tile_overhead_bytes`` (DMA set-up as equivalent traffic).
    """
    a, s, n = dtype_bytes(shape.act_dtype), dtype_bytes(shape.score_dtype), shape.instances
    q_bytes = n * shape.q_len * shape.head_dim * a
    kv_bytes = n * shape.kv_len * shape.head_dim * a
    score_bytes = n * shape.q_len * shape.kv_len * s
    spill = 0 if num_tiles else 2 * score_bytes
    traffic = {
        "Q": q_bytes,
        "K": kv_bytes,
        "S_in": spill,
        "S_out": spill,
        "V": kv_bytes,
        "A": q_bytes,
        "tile_overhead": (num_tiles or 0) * n * tile_overhead_bytes,
    }
    traffic["total"] = sum(traffic.values())
    return traffic


@dataclass(frozen=True)
class TilePlan:
    """The planner's answer for one attention shape."""

    num_tiles: int
    rows_per_tile: int
    working_set_bytes: int
    sram_bytes: int
    sram_utilization: float
    dram_bytes_untiled: int
    dram_bytes_tiled: int
    traffic_untiled: dict[str, int]
    traffic_tiled: dict[str, int]

    @property
    def dram_reduction(self) -> float:
        return 1.0 - self.dram_bytes_tiled / self.dram_bytes_untiled

    def to_dict(self) -> dict:
        return {**asdict(self), "dram_reduction": self.dram_reduction}


def plan_tiles(shape: AttentionShape, sram_bytes: int, tile_overhead_bytes: int = 4096) -> TilePlan:
    """The fewest query tiles per head whose working set fits ``sram_bytes``.

    Raises :class:`EdgefusionError` when even one query row (with the head's K and V) does not
    fit: no tiling over queries can help then.
    """
    one_row = working_set_bytes(shape, 1)
    if one_row > sram_bytes:
        raise EdgefusionError(
            f"SRAM of {sram_bytes:,} bytes is smaller than one query row's working set ({one_row:,} bytes: "
            f"K and V of {shape.kv_len} keys x {shape.head_dim} plus one score row); "
            "give at least that much SRAM"
        )
    max_rows = (sram_bytes - working_set_bytes(shape, 0)) // (one_row - working_set_bytes(shape, 0))
    num_tiles = math.ceil(shape.q_len / min(max_rows, shape.q_len))
    rows = math.ceil(shape.q_len / num_tiles)
    used = working_set_bytes(shape, rows)
    untiled = traffic_bytes(shape, None)
    tiled = traffic_bytes(shape, num_tiles, tile_overhead_bytes)
    return TilePlan(
        num_tiles=num_tiles,
        rows_per_tile=rows,
        working_set_bytes=used,
        sram_bytes=sram_bytes,
        sram_utilization=used / sram_bytes,
        dram_bytes_untiled=untiled["total"],
        dram_bytes_tiled=tiled["total"],
        traffic_untiled=untiled,
        traffic_tiled=tiled,
    )
