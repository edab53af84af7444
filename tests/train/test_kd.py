"""``distill`` end to end on micro models: the output is a plain diffusers pipeline, a killed run
resumes exactly, every loss term is logged, the CLI wraps it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import typer
import yaml
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from typer.testing import CliRunner

from edgefusion.arch import compress_path
from edgefusion.errors import EdgefusionError
from edgefusion.train import kd
from edgefusion.train.cli import register
from edgefusion.train.config import load_config
from edgefusion.train.kd import CONFIG_NAME, KDConfig, distill

TERMS = ("loss", "task", "output_kd", "feature_kd")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "losses.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _unet_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


def test_distill_writes_a_pipeline_that_plain_diffusers_loads_and_runs(
    kd_config, flawed_folder, tmp_path
) -> None:
    config = kd_config(
        f"data.path={flawed_folder}", f"data.cache={tmp_path / 'cache'}", "caption_dropout=0.5"
    )
    report = distill(config)

    assert report.variant == "tiny" and report.steps == 4
    assert report.skipped == {"missing": 1, "corrupt": 2, "no_caption": 1, "outside": 0}
    pipe = StableDiffusionPipeline.from_pretrained(report.out, safety_checker=None)
    assert list(pipe.unet.config.block_out_channels) == [32, 64, 64]  # the BK-Tiny student
    image = pipe("a red circle", num_inference_steps=2, height=16, width=16, output_type="np").images
    assert image.shape == (1, 16, 16, 3) and (0 <= image).all() and (image <= 1).all()
    assert load_config(KDConfig, report.out / CONFIG_NAME) == config
    assert load_config(KDConfig, report.run_dir / "config.yaml") == config
    # The shipped U-Net is the EMA weights saved with the last checkpoint.
    ema = load_file(str(report.run_dir / "checkpoints" / "step-0000004" / "ema.safetensors"))
    assert all(torch.equal(ema[name], tensor) for name, tensor in _unet_weights(report.out).items())


def test_a_killed_run_resumes_exactly(kd_config, tmp_path, monkeypatch) -> None:
    settings = ("train.steps=6", "train.gradient_accumulation=2", "train.lr_warmup_steps=3")
    straight = distill(kd_config(*settings, f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}"))

    calls = {"n": 0}
    real_kd_loss = kd.kd_loss

    def killed_at_step_six(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # step 6's first micro-batch: steps 1-5 logged, checkpoint at 4
            raise KeyboardInterrupt
        return real_kd_loss(*args, **kwargs)

    monkeypatch.setattr(kd, "kd_loss", killed_at_step_six)
    resumed_config = kd_config(*settings, f"run_dir={tmp_path / 'b'}", f"out={tmp_path / 'b-out'}")
    with pytest.raises(KeyboardInterrupt):
        distill(resumed_config)
    assert [row["step"] for row in _rows(tmp_path / "b")] == ["1", "2", "3", "4", "5"]
    monkeypatch.setattr(kd, "kd_loss", real_kd_loss)
    resumed = distill(resumed_config)

    assert resumed.resumed_from == 4 and straight.resumed_from == 0
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    a, b = _unet_weights(straight.out), _unet_weights(resumed.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lrs = [float(row["lr"]) for row in _rows(tmp_path / "a")]
    assert lrs == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3, 1e-3])


def test_each_loss_term_is_logged_to_csv_and_tensorboard(kd_config) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = distill(kd_config("train.steps=2", "train.ema_decay=null"))
    rows = _rows(report.run_dir)
    assert [row["step"] for row in rows] == ["1", "2"]
    feature_columns = [k for k in rows[0] if k.startswith("feature_kd/")]
    assert len(feature_columns) == 6  # BK-Tiny's six pairs
    for row in rows:
        total = float(row["task"]) + float(row["output_kd"]) + float(row["feature_kd"])
        assert float(row["loss"]) == pytest.approx(total, rel=1e-6)
        assert float(row["feature_kd"]) == pytest.approx(
            sum(float(row[k]) for k in feature_columns), rel=1e-5
        )
    events = EventAccumulator(str(next((report.run_dir / "tensorboard").iterdir()))).Reload()
    for term in (*TERMS, *feature_columns, "lr", "grad_norm"):
        assert [event.step for event in events.Scalars(term)] == [1, 2]


def test_a_run_folder_refuses_a_different_config(kd_config) -> None:
    distill(kd_config("train.steps=2"))
    with pytest.raises(EdgefusionError, match="loss.feature_weight differ"):
        distill(kd_config("train.steps=3", "loss.feature_weight=0", "overwrite=true"))


def test_a_run_without_a_final_checkpoint_still_writes_its_output(kd_config, tmp_path) -> None:
    """``train.final_checkpoint: false`` leaves no multi-GB optimizer state behind a run that will
    not be continued; the output is the same EMA U-Net a checkpointed run ships."""
    checkpointed = distill(kd_config("train.steps=2"))
    bare = [f"out={tmp_path / 'bare-out'}", f"run_dir={tmp_path / 'bare-run'}"]
    report = distill(
        kd_config("train.steps=2", "train.checkpoint_every=100", "train.final_checkpoint=false", *bare)
    )
    assert not list((report.run_dir / "checkpoints").glob("step-*"))
    ema = load_file(str(checkpointed.run_dir / "checkpoints" / "step-0000002" / "ema.safetensors"))
    assert all(torch.equal(ema[name], tensor) for name, tensor in _unet_weights(report.out).items())


def test_a_run_started_before_a_setting_existed_resumes_with_its_default(kd_config) -> None:
    """A run folder whose config.yaml lacks a setting added since ran with that setting's default."""
    report = distill(kd_config("train.steps=2"))
    saved = report.run_dir / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    del data["loss"]["feature_weight"]  # as if written before the setting existed
    saved.write_text(yaml.safe_dump(data))
    assert distill(kd_config("train.steps=3", "overwrite=true")).resumed_from == 2
    with pytest.raises(EdgefusionError, match="loss.feature_weight differ"):
        distill(kd_config("train.steps=4", "loss.feature_weight=0", "overwrite=true"))


def test_a_cosine_run_logs_its_schedule_and_keeps_its_length_on_resume(kd_config) -> None:
    report = distill(kd_config("train.steps=4", "train.lr_schedule=cosine", "train.ema_decay=null"))
    lrs = [float(row["lr"]) for row in _rows(report.run_dir)]
    assert lrs == pytest.approx([1e-3, 1e-3 * 0.8535534, 1e-3 * 0.5, 1e-3 * 0.1464466])
    # A longer cosine would have taken other rates at the steps already done.
    with pytest.raises(EdgefusionError, match="train.steps differ"):
        distill(
            kd_config("train.steps=6", "train.lr_schedule=cosine", "train.ema_decay=null", "overwrite=true")
        )


def test_student_cut_from_another_model_distills_from_a_new_teacher(micro, tmp_path, kd_config) -> None:
    """BK-SDM-Adv: the student is a compress output of one model, the teacher another U-Net."""
    compress_path(
        micro.write_pipeline(tmp_path / "original", micro.unet(seed=1)), "tiny", tmp_path / "student"
    )
    stronger = tmp_path / "stronger-unet"
    micro.unet(seed=2).save_pretrained(stronger)
    report = distill(kd_config(f"teacher={stronger}", f"student={tmp_path / 'student'}", "variant=null"))
    assert report.variant == "tiny"  # inferred from the student's block structure
    student = UNet2DConditionModel.from_pretrained(tmp_path / "student" / "unet")
    assert set(_unet_weights(report.out)) == set(student.state_dict())
    # The pipeline parts come from the student's pipeline, the only pipeline given.
    assert (report.out / "text_encoder").is_dir()


def test_cli_runs_distill_from_a_config_file_and_overrides(kd_config, tmp_path) -> None:
    from edgefusion.train.config import save_config

    config_file = save_config(kd_config(), tmp_path / "kd.yaml")
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Stands in for the main edgefusion app."""

    register(app)
    result = CliRunner().invoke(
        app,
        ["distill", "--config", str(config_file), "train.steps=1", "train.mixed_precision=bf16"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "distilled 1 steps" in result.output and "0 missing, 0 corrupt, 0 no_caption" in result.output
    assert (tmp_path / "out" / "model_index.json").is_file()
    assert load_config(KDConfig, tmp_path / "run" / "config.yaml").train.mixed_precision == "bf16"

    bad = CliRunner().invoke(app, ["distill", "--config", str(config_file), "loss.feture_weight=1"])
    assert isinstance(bad.exception, EdgefusionError) and "loss.feture_weight" in str(bad.exception)
