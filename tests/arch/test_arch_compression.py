"""``compress_path``: every kind of teacher in, a folder plain diffusers loads out, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import load_file, save_file

from edgefusion.arch import compress, compress_path
from edgefusion.arch.compression import copy_pipeline_without_unet
from edgefusion.atomic import atomic_output_dir
from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.configs import builtin_config
from edgefusion.pipeline.sources import resolve_source
from edgefusion.provenance import PROVENANCE_FILE


def test_unet_folder_round_trips_through_plain_diffusers(tmp_path, micro_config, make_unet) -> None:
    teacher = make_unet(micro_config(v2=True))
    teacher.save_pretrained(tmp_path / "teacher")
    report = compress_path(tmp_path / "teacher", "tiny", tmp_path / "student")

    loaded = UNet2DConditionModel.from_pretrained(tmp_path / "student")
    expected = compress(teacher, "tiny")
    assert report.source_kind == "unet" and report.initialized_from_teacher
    assert report.student_params == sum(p.numel() for p in loaded.parameters()) < report.teacher_params
    _assert_same_weights(loaded, expected)
    provenance = json.loads((tmp_path / "student" / PROVENANCE_FILE).read_text())
    assert provenance["method"] == "BK-SDM-Tiny block removal" and provenance["initialization"] == "teacher"


def test_half_precision_teacher_gives_half_precision_student(tmp_path, micro_config, make_unet) -> None:
    make_unet(micro_config()).half().save_pretrained(tmp_path / "teacher")
    compress_path(tmp_path / "teacher", "base", tmp_path / "student")
    stored = load_file(tmp_path / "student" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}


def test_pipeline_folder_keeps_every_other_component(tmp_path, micro_pipeline) -> None:
    out = tmp_path / "bk-sdm-small"
    report = compress_path(micro_pipeline, "small", out)

    assert report.source_kind == "pipeline"
    pipeline = StableDiffusionPipeline.from_pretrained(out)
    teacher = UNet2DConditionModel.from_pretrained(micro_pipeline / "unet")
    _assert_same_weights(pipeline.unet, compress(teacher, "small"))
    assert pipeline.unet.config.mid_block_type is None
    for copied in [
        "model_index.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer_config.json",
    ]:
        assert (out / copied).read_bytes() == (micro_pipeline / copied).read_bytes()
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline("a", num_inference_steps=1, height=16, width=16, guidance_scale=1.0, output_type="np")
    assert images.images.shape == (1, 16, 16, 3)


def test_config_only_teacher_gives_random_student(tmp_path, micro_config) -> None:
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "config.json").write_text(json.dumps(micro_config()))
    report = compress_path(tmp_path / "arch", "base", tmp_path / "student", seed=7)

    assert report.source_kind == "config" and not report.initialized_from_teacher
    _assert_same_weights(
        UNet2DConditionModel.from_pretrained(tmp_path / "student"), compress(micro_config(), "base", 7)
    )


def test_single_file_checkpoint_converts_like_diffusers(tmp_path, micro_config, make_unet) -> None:
    config = micro_config()
    teacher = make_unet(config)
    save_file(_to_original_layout(teacher), tmp_path / "model.safetensors")
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "config.json").write_text(json.dumps(config))

    report = compress_path(
        tmp_path / "model.safetensors", "tiny", tmp_path / "student", unet_config=tmp_path / "arch"
    )

    assert report.source_kind == "single_file" and report.initialized_from_teacher
    _assert_same_weights(
        UNet2DConditionModel.from_pretrained(tmp_path / "student"), compress(teacher, "tiny")
    )


@pytest.mark.parametrize(("context_width", "family"), [(768, "sd-v1"), (1024, "sd-v2-base")])
def test_single_file_family_is_read_from_the_header(tmp_path, context_width, family) -> None:
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    save_file({key: torch.zeros(320, context_width)}, tmp_path / "sd.safetensors")
    source = resolve_source(tmp_path / "sd.safetensors")
    assert source.unet_config == builtin_config(family, "unet")
    assert source.unet_config["cross_attention_dim"] == context_width
    assert set(source.configs) == {"unet", "text_encoder", "vae"}


def test_missing_path_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(EdgefusionError, match="does not exist"):
        compress_path(tmp_path / "nowhere", "tiny", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_safetensors_is_one_clear_error(tmp_path, micro_config, make_unet, damage) -> None:
    make_unet(micro_config()).save_pretrained(tmp_path / "teacher")
    weights = tmp_path / "teacher" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x13\x37" * 4096)
    single_file = tmp_path / "model.safetensors"
    single_file.write_bytes(weights.read_bytes())

    for src in [tmp_path / "teacher", single_file]:
        with pytest.raises(EdgefusionError, match="truncated or corrupt"):
            compress_path(src, "tiny", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "teacher"]


def test_pickled_checkpoint_is_refused(tmp_path) -> None:
    (tmp_path / "sd-v1-4.ckpt").write_bytes(b"pickle")
    with pytest.raises(EdgefusionError, match="not a .safetensors file"):
        compress_path(tmp_path / "sd-v1-4.ckpt", "tiny", tmp_path / "out")


def test_non_sd_layout_teacher_is_refused_before_loading(tmp_path, micro_config) -> None:
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "config.json").write_text(json.dumps({**micro_config(), "layers_per_block": 1}))
    with pytest.raises(EdgefusionError, match="not SD-layout"):
        compress_path(tmp_path / "arch", "small", tmp_path / "out")


def test_existing_output_needs_overwrite(tmp_path, micro_config) -> None:
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "config.json").write_text(json.dumps(micro_config()))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")

    with pytest.raises(EdgefusionError, match="already exists.*--overwrite"):
        compress_path(tmp_path / "arch", "tiny", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"

    compress_path(tmp_path / "arch", "tiny", tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert UNet2DConditionModel.from_pretrained(tmp_path / "out").config.block_out_channels == [32, 64, 64]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch", "out"]


def test_failure_while_writing_leaves_nothing_behind(tmp_path, micro_pipeline, monkeypatch) -> None:
    def broken_save(*_args, **_kwargs) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(UNet2DConditionModel, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        compress_path(micro_pipeline, "tiny", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pipeline"]


def test_atomic_output_dir_keeps_the_old_folder_on_failure(tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output_dir(tmp_path / "out", overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]


def _assert_same_weights(actual: torch.nn.Module, expected: torch.nn.Module) -> None:
    actual_state, expected_state = actual.state_dict(), expected.state_dict()
    assert actual_state.keys() == expected_state.keys()
    for name, tensor in expected_state.items():
        assert torch.equal(actual_state[name], tensor), name


_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _to_original_layout(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """Write a diffusers SD-layout U-Net's state dict in the original (LDM) single-file layout."""
    per_stage = unet.config.layers_per_block + 1
    top_level = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    checkpoint = {}
    for key, tensor in unet.state_dict().items():
        parts = key.split(".")
        if key in top_level:
            ldm = top_level[key]
        elif parts[0] == "mid_block":
            slot = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(parts[1:3])]
            ldm = f"middle_block.{slot}.{_ldm_layer(parts[1], parts[3:])}"
        else:
            block, kind, layer, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
            if parts[0] == "down_blocks":
                index = 1 + block * per_stage + layer
                if kind == "downsamplers":
                    ldm = f"input_blocks.{(block + 1) * per_stage}.0.op.{rest[-1]}"
                else:
                    ldm = f"input_blocks.{index}.{0 if kind == 'resnets' else 1}.{_ldm_layer(kind, rest)}"
            else:
                index = block * per_stage + layer
                if kind == "upsamplers":
                    slot = 2 if block > 0 else 1  # after the attention in cross-attention stages
                    ldm = f"output_blocks.{block * per_stage + per_stage - 1}.{slot}.conv.{rest[-1]}"
                else:
                    ldm = f"output_blocks.{index}.{0 if kind == 'resnets' else 1}.{_ldm_layer(kind, rest)}"
        checkpoint[f"model.diffusion_model.{ldm}"] = tensor.contiguous()
    return checkpoint


def _ldm_layer(kind: str, rest: list[str]) -> str:
    if kind == "resnets":
        return ".".join([_RESNET_TO_LDM[rest[0]], *rest[1:]])
    return ".".join(rest)


@pytest.mark.parametrize("component,kept", [("unet", {"model_index.json", "vae"}), ("vae", None)])
def test_a_new_unet_leaves_the_old_ones_stage_records_behind(tmp_path, component, kept) -> None:
    """The root's stage record (how the replaced U-Net was trained) must not describe a student;
    a new decoder keeps it, as the U-Net it describes stays."""
    source = tmp_path / "source"
    for folder in ("unet", "vae"):
        (source / folder).mkdir(parents=True)
        (source / folder / "config.json").write_text("{}")
    (source / "model_index.json").write_text("{}")
    (source / "lcm.yaml").write_text("student: toy:bk-tiny-adv\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    copy_pipeline_without_unet(source, dest, component)
    names = {entry.name for entry in dest.iterdir()}
    assert names == (kept if kept is not None else {"model_index.json", "unet", "lcm.yaml"})
