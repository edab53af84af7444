"""BK-SDM block removal as data: which blocks a student keeps and which teacher tensors seed it.

BK-SDM (Kim et al., "BK-SDM: A Lightweight, Fast, and Cheap Version of Stable Diffusion", 2023)
shrinks the SD U-Net by removing whole blocks:

- ``base``: one resnet (+ attention) per down stage instead of two, and two of the three per up
  stage (the first and the last, whose input widths still fit the skip connections);
- ``small``: base without the mid block;
- ``tiny``: small without the innermost, attention-free stage (its down block, the downsampler
  that fed it, and the first up block).

Everything here is derived from the block structure of an SD-layout ``UNet2DConditionModel``
config (any number of stages, any widths or head dims, v1 or v2 style), so the same plan serves
SD-v1.4 and the toy teacher. One :class:`RemovalPlan` builds the student config, maps each student
tensor to the teacher tensor that initializes it, and pairs student and teacher layers for
feature-level knowledge distillation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from edgefusion.errors import EdgefusionError

VARIANTS: tuple[str, ...] = ("base", "small", "tiny")

_CROSS_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_CROSS_UP, _PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"
_CROSS_MID = "UNetMidBlock2DCrossAttn"

# Config entries that hold one value per stage, in down-block order (diffusers reverses them for
# the up path), and the one entry that is already in up-block order.
_PER_STAGE_KEYS = (
    "block_out_channels",
    "down_block_types",
    "attention_head_dim",
    "num_attention_heads",
    "only_cross_attention",
    "cross_attention_dim",
    "transformer_layers_per_block",
)
_PER_UP_STAGE_KEYS = ("up_block_types", "reverse_transformer_layers_per_block")
_BLOCK_CONTAINERS = ("down_blocks", "mid_block", "up_blocks")


class FeaturePair(NamedTuple):
    """A student module whose output BK-SDM's feature loss matches to a teacher module's output."""

    student: str
    teacher: str


@dataclass(frozen=True)
class SDLayout:
    """The block structure of an SD-layout U-Net: ``num_stages`` resolutions, and
    ``layers_per_block`` resnets per down stage (up stages have one more)."""

    num_stages: int
    layers_per_block: int


@dataclass(frozen=True)
class RemovalPlan:
    """One BK-SDM removal: the student config and how the student relates to the teacher.

    ``weight_map`` maps student module prefixes inside the U-Net's blocks (``down_blocks``,
    ``mid_block``, ``up_blocks``) to the teacher prefixes whose tensors initialize them; modules
    outside the blocks (``conv_in``, time embedding, ``conv_norm_out``, ``conv_out``) keep their
    names. ``feature_pairs`` lists the layers BK-SDM's feature-KD loss matches.
    """

    variant: str
    teacher_config: dict[str, Any]
    student_config: dict[str, Any]
    weight_map: dict[str, str]
    feature_pairs: tuple[FeaturePair, ...]

    def teacher_name(self, student_name: str) -> str:
        """Return the teacher parameter/module name that initializes ``student_name``."""
        if student_name.split(".", 1)[0] not in _BLOCK_CONTAINERS:
            return student_name
        parts = student_name.split(".")
        for end in range(len(parts), 0, -1):
            prefix = ".".join(parts[:end])
            if prefix in self.weight_map:
                return self.weight_map[prefix] + student_name[len(prefix) :]
        raise KeyError(f"{student_name!r} is not part of the {self.variant} student")


def check_variant(variant: str) -> str:
    """Return ``variant`` if BK-SDM defines it, else raise naming the valid ones."""
    if variant not in VARIANTS:
        raise EdgefusionError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    return variant


def sd_layout(config: Mapping[str, Any]) -> SDLayout:
    """Check that ``config`` describes an SD-layout U-Net and return its block structure.

    SD layout: cross-attention down stages, then one attention-free down stage; the mirror image
    on the way up; a cross-attention mid block; the same number of resnets in every down stage.
    """
    class_name = config.get("_class_name", "UNet2DConditionModel")
    if class_name != "UNet2DConditionModel":
        _not_sd_layout(f"it describes a {class_name}, not a UNet2DConditionModel")
    down = list(config.get("down_block_types") or ())
    up = list(config.get("up_block_types") or ())
    n = len(down)
    if n < 2 or down != [_CROSS_DOWN] * (n - 1) + [_PLAIN_DOWN]:
        _not_sd_layout(f"down_block_types must be {_CROSS_DOWN} stages then one {_PLAIN_DOWN}, got {down}")
    if up != [_PLAIN_UP] + [_CROSS_UP] * (n - 1):
        _not_sd_layout(f"up_block_types must be one {_PLAIN_UP} then {n - 1} {_CROSS_UP}, got {up}")
    mid = config.get("mid_block_type", _CROSS_MID)
    if mid != _CROSS_MID:
        _not_sd_layout(f"mid_block_type must be {_CROSS_MID}, got {mid}")
    if len(config.get("block_out_channels") or ()) != n:
        _not_sd_layout(f"block_out_channels must list {n} widths, one per down block")
    layers = config.get("layers_per_block", 2)
    layer_counts = set(layers) if isinstance(layers, list | tuple) else {layers}
    if len(layer_counts) != 1 or not isinstance(next(iter(layer_counts)), int):
        _not_sd_layout(f"layers_per_block must be one integer for every stage, got {layers}")
    per_stage = layer_counts.pop()
    if per_stage < 2:
        _not_sd_layout(f"layers_per_block is {per_stage}: there is no block left to remove")
    return SDLayout(num_stages=n, layers_per_block=per_stage)


def plan_removal(config: Mapping[str, Any], variant: str) -> RemovalPlan:
    """Plan BK-SDM's ``base``, ``small`` or ``tiny`` removal for an SD-layout U-Net ``config``."""
    check_variant(variant)
    layout = sd_layout(config)
    widths = list(config["block_out_channels"])
    if variant == "tiny" and widths[-1] != widths[-2]:
        raise EdgefusionError(
            f"tiny removal needs the two innermost stages to share a width (got block_out_channels "
            f"{widths}): the teacher up block that seeds the student's first one expects it; use base "
            "or small"
        )
    teacher_config = dict(config)
    return RemovalPlan(
        variant=variant,
        teacher_config=teacher_config,
        student_config=student_config(teacher_config, variant, layout),
        weight_map=weight_map(layout, variant),
        feature_pairs=feature_pairs(layout, variant),
    )


def student_config(teacher_config: Mapping[str, Any], variant: str, layout: SDLayout) -> dict[str, Any]:
    """The student's diffusers config: one resnet per down stage (two per up stage), no mid block
    for ``small``/``tiny``, and for ``tiny`` every per-stage entry without the innermost stage."""
    config = {k: v for k, v in teacher_config.items() if not k.startswith("_") or k == "_class_name"}
    config["layers_per_block"] = 1
    if variant in ("small", "tiny"):
        config["mid_block_type"] = None
    if variant == "tiny":
        for key in _PER_STAGE_KEYS:
            if _is_per_stage(config.get(key), layout):
                config[key] = list(config[key])[:-1]
        for key in _PER_UP_STAGE_KEYS:
            if _is_per_stage(config.get(key), layout):
                config[key] = list(config[key])[1:]
    return config


def weight_map(layout: SDLayout, variant: str) -> dict[str, str]:
    """Student module prefix -> teacher module prefix, for every module inside the student's blocks.

    Down stages keep resnet (and attention) 0. Up stages keep layers 0 and ``layers_per_block``
    (the last), which become the student's layers 0 and 1: BK-SDM's ``resnets.1 <- resnets.2``.
    For ``tiny`` the student's up stage ``i`` is the teacher's ``i + 1``.
    """
    n_teacher = layout.num_stages
    n_student = n_teacher - 1 if variant == "tiny" else n_teacher
    mapping: dict[str, str] = {}
    for i in range(n_student):
        mapping[f"down_blocks.{i}.resnets.0"] = f"down_blocks.{i}.resnets.0"
        if i < n_teacher - 1:  # every teacher down stage but the last has cross-attention
            mapping[f"down_blocks.{i}.attentions.0"] = f"down_blocks.{i}.attentions.0"
        if i < n_student - 1:  # the student's last down stage has no downsampler
            mapping[f"down_blocks.{i}.downsamplers.0"] = f"down_blocks.{i}.downsamplers.0"
    if variant == "base":
        mapping["mid_block"] = "mid_block"
    offset = 1 if variant == "tiny" else 0
    kept_layers = (0, layout.layers_per_block)
    for i in range(n_student):
        t = i + offset
        for s_layer, t_layer in enumerate(kept_layers):
            mapping[f"up_blocks.{i}.resnets.{s_layer}"] = f"up_blocks.{t}.resnets.{t_layer}"
            if t > 0:  # every teacher up stage but the first has cross-attention
                mapping[f"up_blocks.{i}.attentions.{s_layer}"] = f"up_blocks.{t}.attentions.{t_layer}"
        if i < n_student - 1:  # the student's last up stage has no upsampler
            mapping[f"up_blocks.{i}.upsamplers.0"] = f"up_blocks.{t}.upsamplers.0"
    return mapping


def feature_pairs(layout: SDLayout, variant: str) -> tuple[FeaturePair, ...]:
    """The layers whose outputs BK-SDM's feature-KD loss matches (facts: BK-SDM training script).

    ``base``/``small``: the output of every down and up block, paired by index. ``tiny``: the
    outer down blocks by index; the innermost kept down stage has no downsampler in the student,
    so its last attention's ``proj_out`` is matched instead; student up block ``i`` against
    teacher up block ``i + 1``.
    """
    n = layout.num_stages
    if variant != "tiny":
        blocks = [f"down_blocks.{i}" for i in range(n)] + [f"up_blocks.{i}" for i in range(n)]
        return tuple(FeaturePair(name, name) for name in blocks)
    pairs = [FeaturePair(f"down_blocks.{i}", f"down_blocks.{i}") for i in range(n - 2)]
    last_attention = layout.layers_per_block - 1
    pairs.append(
        FeaturePair(
            f"down_blocks.{n - 2}.attentions.0.proj_out",
            f"down_blocks.{n - 2}.attentions.{last_attention}.proj_out",
        )
    )
    pairs += [FeaturePair(f"up_blocks.{i}", f"up_blocks.{i + 1}") for i in range(n - 1)]
    return tuple(pairs)


def _is_per_stage(value: Any, layout: SDLayout) -> bool:
    return isinstance(value, list | tuple) and len(value) == layout.num_stages


def _not_sd_layout(problem: str) -> NoReturn:
    raise EdgefusionError(
        f"U-Net config is not SD-layout: {problem}; BK-SDM block removal needs a Stable Diffusion "
        "UNet2DConditionModel (e.g. sd-v1.4, sd-v2.1-base)"
    )
