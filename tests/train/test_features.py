"""Feature hooks: BK-SDM's pairs capture matching maps for base, small and tiny, under DDP too."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from accelerate.utils import extract_model_from_parallel

from edgefusion.arch import compress, plan_removal
from edgefusion.errors import EdgefusionError
from edgefusion.train.features import capture_features

# Map shapes on 8x8 latents, batch 2, teacher widths (32, 64, 64, 64): (student name, shape).
EXPECTED = {
    "base": [
        ("down_blocks.0", (2, 32, 4, 4)),
        ("down_blocks.1", (2, 64, 2, 2)),
        ("down_blocks.2", (2, 64, 1, 1)),
        ("down_blocks.3", (2, 64, 1, 1)),
        ("up_blocks.0", (2, 64, 2, 2)),
        ("up_blocks.1", (2, 64, 4, 4)),
        ("up_blocks.2", (2, 64, 8, 8)),
        ("up_blocks.3", (2, 32, 8, 8)),
    ],
    "tiny": [
        ("down_blocks.0", (2, 32, 4, 4)),
        ("down_blocks.1", (2, 64, 2, 2)),
        ("down_blocks.2.attentions.0.proj_out", (2, 64, 2, 2)),
        ("up_blocks.0", (2, 64, 4, 4)),
        ("up_blocks.1", (2, 64, 8, 8)),
        ("up_blocks.2", (2, 32, 8, 8)),
    ],
}
EXPECTED["small"] = EXPECTED["base"]


def _inputs(text_width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, text_width)


@pytest.mark.parametrize("variant", ["base", "small", "tiny"])
def test_pairs_capture_maps_of_equal_shape_in_student_and_teacher(variant: str, micro) -> None:
    teacher = micro.unet()
    student = compress(teacher, variant)
    pairs = plan_removal(dict(teacher.config), variant).feature_pairs
    x, t, text = _inputs(micro.text_width)
    with torch.no_grad():
        with capture_features(student, [p.student for p in pairs]) as student_maps:
            student(x, t, text)
        with capture_features(teacher, [p.teacher for p in pairs]) as teacher_maps:
            teacher(x, t, text)
    assert [(p.student, tuple(student_maps[p.student].shape)) for p in pairs] == EXPECTED[variant]
    for pair in pairs:
        assert teacher_maps[pair.teacher].shape == student_maps[pair.student].shape


def test_hooks_are_removed_on_exit_even_after_an_error(micro) -> None:
    unet = micro.unet()
    names = ["down_blocks.0", "up_blocks.1"]
    with pytest.raises(RuntimeError), capture_features(unet, names):
        raise RuntimeError("boom")
    assert all(not unet.get_submodule(name)._forward_hooks for name in names)


def test_unknown_module_names_the_close_ones(micro) -> None:
    with pytest.raises(EdgefusionError, match="no module 'down_block.0'.*down_blocks.0"):
        with capture_features(micro.unet(), ["down_block.0"]):
            pass


def test_hooks_on_the_unwrapped_model_fire_under_ddp(micro, tmp_path) -> None:
    """DDP prefixes every name with ``module.``; hooks placed on the unwrapped model need none."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        student = compress(micro.unet(), "tiny")
        wrapped = torch.nn.parallel.DistributedDataParallel(student)
        assert "module.down_blocks.0" in dict(wrapped.named_modules())
        x, t, text = _inputs(micro.text_width)
        with capture_features(extract_model_from_parallel(wrapped), ["down_blocks.0", "up_blocks.2"]) as maps:
            wrapped(x, t, text).sample.mean().backward()
        assert tuple(maps["down_blocks.0"].shape) == (2, 32, 4, 4)
        assert tuple(maps["up_blocks.2"].shape) == (2, 32, 8, 8)
        assert maps["up_blocks.2"].requires_grad
    finally:
        dist.destroy_process_group()
