"""BK-SDM block removal: the plan (student config, weight map, feature-KD pairs) and ``compress``."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from edgefusion.arch import VARIANTS, compress, count_unet_parameters, plan_removal
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.sources import load_unet_config

# BK-SDM's published U-Net sizes for SD-v1.4 (the paper's Table 1).
SD_V14_PARAMS = {None: 859_520_964, "base": 579_384_964, "small": 482_346_884, "tiny": 323_384_964}


@pytest.mark.parametrize("variant", [None, *VARIANTS])
def test_sd_v14_parameter_counts_are_bk_sdm_exact(variant: str | None) -> None:
    config = load_unet_config("sd-v1.4")
    if variant is not None:
        config = plan_removal(config, variant).student_config
    assert count_unet_parameters(config) == SD_V14_PARAMS[variant]


def test_sd_v14_plans_follow_bk_sdm_remaps() -> None:
    config = load_unet_config("sd-v1.4")
    base, small = plan_removal(config, "base"), plan_removal(config, "small")
    assert base.teacher_name("up_blocks.2.resnets.1.conv1.weight") == "up_blocks.2.resnets.2.conv1.weight"
    assert (
        base.teacher_name("up_blocks.3.attentions.1.proj_in.bias") == "up_blocks.3.attentions.2.proj_in.bias"
    )
    assert base.teacher_name("conv_in.weight") == "conv_in.weight"
    assert small.student_config["mid_block_type"] is None
    assert small.weight_map == {k: v for k, v in base.weight_map.items() if k != "mid_block"}
    tiny = plan_removal(config, "tiny")
    student = tiny.student_config
    assert student["block_out_channels"] == [320, 640, 1280]
    assert student["down_block_types"] == ["CrossAttnDownBlock2D"] * 3
    assert student["up_block_types"] == ["CrossAttnUpBlock2D"] * 3
    assert tiny.teacher_name("up_blocks.0.attentions.1.norm.weight") == "up_blocks.1.attentions.2.norm.weight"
    assert tiny.teacher_name("up_blocks.2.resnets.0.conv1.weight") == "up_blocks.3.resnets.0.conv1.weight"
    assert tiny.teacher_name("up_blocks.1.upsamplers.0.conv.weight") == "up_blocks.2.upsamplers.0.conv.weight"
    assert "down_blocks.2.downsamplers.0" not in tiny.weight_map


def test_sd_v14_feature_pairs_match_bk_sdm() -> None:
    config = load_unet_config("sd-v1.4")
    tiny = plan_removal(config, "tiny").feature_pairs
    assert [p.teacher for p in tiny] == [
        "down_blocks.0", "down_blocks.1", "down_blocks.2.attentions.1.proj_out",
        "up_blocks.1", "up_blocks.2", "up_blocks.3",
    ]  # fmt: skip
    assert [p.student for p in tiny] == [
        "down_blocks.0", "down_blocks.1", "down_blocks.2.attentions.0.proj_out",
        "up_blocks.0", "up_blocks.1", "up_blocks.2",
    ]  # fmt: skip
    base = plan_removal(config, "base").feature_pairs
    expected = [f"down_blocks.{i}" for i in range(4)] + [f"up_blocks.{i}" for i in range(4)]
    assert [p.student for p in base] == [p.teacher for p in base] == expected


def test_sd_v2_tiny_trims_per_stage_head_dims() -> None:
    student = plan_removal(load_unet_config("sd-v2.1-base"), "tiny").student_config
    assert student["attention_head_dim"] == [5, 10, 20]
    assert student["use_linear_projection"] is True
    assert student["cross_attention_dim"] == 1024


STYLES = {
    "v1-4stage": dict(widths=(32, 64, 64, 64)),
    "v2-4stage": dict(widths=(32, 64, 64, 64), v2=True),
    "v1-2stage": dict(widths=(16, 16)),
    "v1-3stage": dict(widths=(16, 32, 32)),
    "v2-5stage": dict(widths=(16, 32, 32, 48, 48), v2=True),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("style", STYLES)
def test_student_copies_mapped_teacher_tensors_and_runs(micro_config, make_unet, style, variant) -> None:
    teacher = make_unet(micro_config(**STYLES[style]))
    plan = plan_removal(teacher.config, variant)
    student = compress(teacher, variant)

    teacher_state = teacher.state_dict()
    student_state = student.state_dict()
    assert len(student_state) > 0
    for name, tensor in student_state.items():
        assert torch.equal(tensor, teacher_state[plan.teacher_name(name)]), name
    assert not any(t.is_meta for t in [*student.parameters(), *student.buffers()])
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())

    sample, timestep, text = _inputs(teacher)
    with torch.no_grad():
        teacher_out = teacher(sample, timestep, text).sample
        student_out = student(sample, timestep, text).sample
    assert student_out.shape == teacher_out.shape
    assert torch.isfinite(student_out).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("style", ["v1-4stage", "v2-5stage"])
def test_feature_pairs_resolve_to_modules_with_matching_outputs(
    micro_config, make_unet, style, variant
) -> None:
    teacher = make_unet(micro_config(**STYLES[style]))
    plan = plan_removal(teacher.config, variant)
    student = compress(teacher, variant)
    sample, timestep, text = _inputs(teacher)
    with _record_outputs(teacher, [p.teacher for p in plan.feature_pairs]) as teacher_maps:
        teacher(sample, timestep, text)
    with _record_outputs(student, [p.student for p in plan.feature_pairs]) as student_maps:
        student(sample, timestep, text)
    for pair in plan.feature_pairs:
        assert student_maps[pair.student].shape == teacher_maps[pair.teacher].shape, pair


def test_config_only_teacher_gives_seeded_random_student(micro_config) -> None:
    config = micro_config()
    first, again, other = (
        compress(config, "small", seed=3),
        compress(config, "small", seed=3),
        compress(config, "small"),
    )
    assert first.config.mid_block_type is None
    assert torch.equal(first.conv_in.weight, again.conv_in.weight)
    assert not torch.equal(first.conv_in.weight, other.conv_in.weight)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"down_block_types": ["CrossAttnDownBlock2D"] * 4}, "down_block_types"),
        ({"up_block_types": ["CrossAttnUpBlock2D"] * 4}, "up_block_types"),
        ({"mid_block_type": "UNetMidBlock2D"}, "mid_block_type"),
        ({"layers_per_block": 1}, "layers_per_block"),
        ({"block_out_channels": [32, 64, 64]}, "block_out_channels"),
        ({"_class_name": "AutoencoderKL"}, "AutoencoderKL"),
    ],
)
def test_non_sd_layout_is_refused_with_the_reason(micro_config, change, problem) -> None:
    with pytest.raises(EdgefusionError, match=f"not SD-layout.*{problem}"):
        plan_removal({**micro_config(), **change}, "base")


def test_tiny_needs_equal_innermost_widths(micro_config) -> None:
    with pytest.raises(EdgefusionError, match="two innermost stages to share a width"):
        plan_removal(micro_config(widths=(16, 32, 64)), "tiny")
    assert plan_removal(micro_config(widths=(16, 32, 64)), "small").student_config["layers_per_block"] == 1


def test_unknown_variant_lists_the_valid_ones(micro_config) -> None:
    with pytest.raises(EdgefusionError, match="unknown variant 'huge'.*base, small, tiny"):
        plan_removal(micro_config(), "huge")


def _inputs(unet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    sample = torch.randn(2, unet.config.in_channels, size, size, generator=generator)
    text = torch.randn(2, 5, unet.config.cross_attention_dim, generator=generator)
    return sample, torch.tensor([10, 500]), text


@contextmanager
def _record_outputs(model: torch.nn.Module, names: list[str]):
    """Record the (first) output tensor of each named module during a forward pass."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, _args, output) -> None:
            outputs[name] = output[0] if isinstance(output, tuple) else output

        return hook

    assert set(names) <= set(modules), set(names) - set(modules)
    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    try:
        with torch.no_grad():
            yield outputs
    finally:
        for handle in handles:
            handle.remove()
