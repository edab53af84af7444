"""Stage configs: YAML round trip, KEY=VALUE overrides, checks that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefusion.errors import EdgefusionError
from edgefusion.train.config import apply_overrides, config_to_dict, load_config, save_config
from edgefusion.train.kd import KDConfig

REQUIRED = ["teacher=toy:teacher", "variant=tiny", "data.path=data/toy"]
EXAMPLES = sorted((Path(__file__).parents[2] / "configs" / "kd").glob("toy-bk-tiny-*.yaml"))


def test_yaml_round_trip_keeps_every_field(tmp_path) -> None:
    config = load_config(
        KDConfig,
        None,
        [*REQUIRED, "train.ema_decay=null", "loss.normalize_features=true", "train.mixed_precision=bf16"],
    )
    path = save_config(config, tmp_path / "kd.yaml")
    again = load_config(KDConfig, path)
    assert again == config
    assert config_to_dict(again) == config_to_dict(config)
    assert again.train.ema_decay is None and again.loss.normalize_features is True


def test_overrides_win_over_the_file_and_parse_as_yaml(tmp_path) -> None:
    path = tmp_path / "kd.yaml"
    path.write_text(
        "teacher: toy:teacher\nvariant: small\ndata: {path: d, resolution: 64}\ntrain: {steps: 10}\n"
    )
    config = load_config(
        KDConfig, path, ["train.steps=200", "train.learning_rate=1e-4", "loss.output_weight=0"]
    )
    assert config.variant == "small" and config.data.resolution == 64
    assert config.train.steps == 200
    assert config.train.learning_rate == pytest.approx(1e-4) and isinstance(config.train.learning_rate, float)
    assert config.loss.output_weight == 0.0 and isinstance(config.loss.output_weight, float)


def test_apply_overrides_builds_nested_sections_without_touching_the_input() -> None:
    data = {"train": {"steps": 1}}
    result = apply_overrides(data, ["train.steps=5", "data.cache=runs/cache", "pipeline=null"])
    assert result == {"train": {"steps": 5}, "data": {"cache": "runs/cache"}, "pipeline": None}
    assert data == {"train": {"steps": 1}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stepz=3", "unknown config key train.stepz"),
        ("train.steps=many", "train.steps must be int"),
        ("train.steps=true", "train.steps must be int"),
        ("train.mixed_precision=fp8", "train.mixed_precision must be one of no, fp16, bf16"),
        ("train.steps=0", "train.steps must be at least 1"),
        ("variant=huge", "unknown variant 'huge'"),
        ("loss.task_weight=-1", "loss weights must be 0 or more"),
        ("train.steps", "is not KEY=VALUE"),
        ("data=3", "config section data must be a mapping"),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(override: str, message: str) -> None:
    with pytest.raises(EdgefusionError, match=message.replace("(", r"\(")):
        load_config(KDConfig, None, [*REQUIRED, override])


def test_missing_teacher_and_data_are_reported() -> None:
    with pytest.raises(EdgefusionError, match="set teacher"):
        load_config(KDConfig, None, ["variant=tiny", "data.path=d"])
    with pytest.raises(EdgefusionError, match="set data.path"):
        load_config(KDConfig, None, ["teacher=t", "variant=tiny"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_example_configs_load(path: Path) -> None:
    config = load_config(KDConfig, path)
    # The v1 runs share one latent cache; the shipped run's v2 teacher has another text encoder.
    assert config.variant == "tiny" and config.data.cache.startswith("runs/kd/cache-toy")
