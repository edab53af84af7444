"""``edgefusion dreambooth`` on micro models: full and LoRA steps lower the loss, the LoRA file is
diffusers' own, a killed run resumes exactly, class images are cached, an LCM keeps its guidance
embedding, and the mistakes a user can make are clear errors that write nothing."""

from __future__ import annotations

import csv
import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionPipeline
from micro_models import IMAGE_SIZE, micro_unet_config, random_unet, write_lcm_pipeline, write_pipeline
from safetensors.torch import load_file
from typer.testing import CliRunner

from edgefusion.errors import EdgefusionError
from edgefusion.pipeline import sampling
from edgefusion.pipeline.lcm import guidance_embedding
from edgefusion.pipeline.load import load_pipeline
from edgefusion.pipeline.lora import LORA_WEIGHTS
from edgefusion.provenance import PROVENANCE_FILE
from edgefusion.toy.subject import write_instance_images
from edgefusion.train import dreambooth
from edgefusion.train.config import load_config
from edgefusion.train.dreambooth import (
    CLASS_IMAGES_DIR,
    DreamBoothConfig,
    SubjectModel,
    dreambooth_loss,
    subject_identifier,
)
from edgefusion.train.lora import LoRAConfig, add_lora


@pytest.fixture(scope="session")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy subject's five instance images at the micro size."""
    return write_instance_images(tmp_path_factory.mktemp("subject") / "instances", IMAGE_SIZE)[0].parent


@pytest.fixture
def db_config(tmp_path: Path, teacher_pipeline: Path, instances: Path):
    """``db_config(*overrides)``: a micro DreamBooth run (prior preservation with 2 class images)."""

    def make(*overrides: str) -> DreamBoothConfig:
        base = [
            f"model={teacher_pipeline}",
            f"instance_images={instances}",
            "instance_prompt=a sks star",
            "class_prompt=a star",
            f"out={tmp_path / 'out'}",
            f"run_dir={tmp_path / 'run'}",
            "num_class_images=2",
            "class_steps=2",
            "guidance_scale=2.0",
            "train.steps=4",
            "train.learning_rate=1e-3",
            "train.checkpoint_every=2",
        ]
        return load_config(DreamBoothConfig, None, [*base, *overrides])

    return make


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "losses.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _fixed_batch_losses(model: SubjectModel, steps: int, lr: float) -> tuple[float, float]:
    """The DreamBooth loss of one fixed batch (latents, prompts, noise, timesteps) before and after
    ``steps`` AdamW steps on it."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler()
    torch.manual_seed(3)
    latents, cond = torch.randn(4, 4, 8, 8), torch.randn(4, 77, 32)

    def loss() -> torch.Tensor:
        return dreambooth_loss(model, scheduler, latents, cond, 2, 1.0, torch.Generator().manual_seed(0))[
            "loss"
        ]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    before = float(loss().detach())
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    return before, float(loss().detach())


def test_a_full_fine_tune_step_lowers_the_loss_of_a_fixed_batch(micro) -> None:
    model = SubjectModel(micro.unet().float().requires_grad_(True), None, None)
    before, after = _fixed_batch_losses(model, steps=3, lr=1e-3)
    assert after < before


def test_a_lora_step_lowers_the_loss_and_trains_the_adapters_alone(micro) -> None:
    unet = add_lora(micro.unet(), LoRAConfig(rank=4), ["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in unet.named_parameters() if not p.requires_grad}
    before, after = _fixed_batch_losses(SubjectModel(unet, None, None), steps=3, lr=1e-2)
    assert after < before
    assert all(torch.equal(p, frozen[n]) for n, p in unet.named_parameters() if n in frozen)


def test_full_fine_tune_writes_a_pipeline_diffusers_and_generate_load(db_config, teacher_pipeline) -> None:
    config = db_config()
    report = dreambooth.dreambooth(config)

    assert report.steps == 4 and report.resumed_from == 0
    rows = _rows(report.run_dir)
    assert {"loss", "instance", "prior"} <= set(rows[0])
    pipe = StableDiffusionPipeline.from_pretrained(report.out, safety_checker=None)
    image = pipe("a sks star", num_inference_steps=2, height=16, width=16, output_type="np").images
    assert image.shape == (1, 16, 16, 3)
    provenance = json.loads((report.out / "unet" / PROVENANCE_FILE).read_text())
    assert provenance["stage"] == "dreambooth" and provenance["identifier"] == "sks"
    assert provenance["guidance_scale"] == 2.0 and provenance["class_images"] == 2
    assert provenance["instance_images"] == 5
    assert load_config(DreamBoothConfig, report.out / dreambooth.CONFIG_NAME) == config
    trained = load_file(str(report.out / "unet" / "diffusion_pytorch_model.safetensors"))
    base = load_file(str(teacher_pipeline / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    # The text encoder is the source's, untouched.
    encoder = Path("text_encoder") / "model.safetensors"
    assert (report.out / encoder).read_bytes() == (teacher_pipeline / encoder).read_bytes()


def _image(pipe, prompt: str = "a sks star") -> torch.Tensor:
    return sampling.generate_tensors(pipe, [prompt], [0], 2, 2.0)


def test_the_lora_file_is_diffusers_own_and_personalizes_a_fresh_base(db_config, teacher_pipeline) -> None:
    report = dreambooth.dreambooth(db_config("lora.rank=4", "train.learning_rate=5e-2"))

    assert sorted(p.name for p in report.out.iterdir()) == sorted(
        [LORA_WEIGHTS, PROVENANCE_FILE, dreambooth.CONFIG_NAME]
    )
    weights = load_file(str(report.out / LORA_WEIGHTS))
    assert weights and all(key.startswith("unet.") and "lora" in key for key in weights)
    assert sum(t.numel() for t in weights.values()) < 0.2 * sum(
        t.numel()
        for t in load_file(str(teacher_pipeline / "unet" / "diffusion_pytorch_model.safetensors")).values()
    )
    base = load_pipeline(teacher_pipeline)
    before = _image(base)
    base.load_lora_weights(report.out)  # plain diffusers, on a fresh copy of the base
    with_lora = _image(base)
    assert not torch.allclose(before, with_lora, atol=1e-3)
    # The folder is also a model of its own: its base with the adapters fused in.
    fused = _image(load_pipeline(report.out))
    assert torch.allclose(fused, with_lora, atol=1e-4)
    provenance = json.loads((report.out / PROVENANCE_FILE).read_text())
    assert provenance["base"] == str(teacher_pipeline.resolve()) and provenance["lora_rank"] == 4


def test_text_encoder_lora_is_saved_in_the_same_file_or_refused_before_training(db_config, tmp_path) -> None:
    """transformers loads a text encoder's adapters only with a recent peft: with an older one the
    run is refused up front, as the file could not be loaded back."""
    from packaging.version import Version
    from transformers.integrations.peft import MIN_PEFT_VERSION

    config = db_config("lora.rank=2", "train_text_encoder=true", "train.steps=2")
    if Version(importlib.metadata.version("peft")) < Version(MIN_PEFT_VERSION):
        with pytest.raises(EdgefusionError, match=f"needs peft >= {MIN_PEFT_VERSION}"):
            dreambooth.dreambooth(config)
        assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
        return
    report = dreambooth.dreambooth(config)
    keys = load_file(str(report.out / LORA_WEIGHTS)).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)


@pytest.mark.parametrize("mode", [(), ("train_text_encoder=true",), ("lora.rank=4",)])
def test_a_killed_run_resumes_exactly(db_config, tmp_path, monkeypatch, mode) -> None:
    settings = (*mode, "train.steps=5")
    straight = dreambooth.dreambooth(
        db_config(*settings, f"run_dir={tmp_path / 'a'}", f"out={tmp_path / 'a-out'}")
    )

    calls = {"n": 0}
    real_loss = dreambooth.dreambooth_loss

    def killed_at_step_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # steps 1-3 logged, checkpoint at 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(dreambooth, "dreambooth_loss", killed_at_step_four)
    config = db_config(*settings, f"run_dir={tmp_path / 'b'}", f"out={tmp_path / 'b-out'}")
    with pytest.raises(KeyboardInterrupt):
        dreambooth.dreambooth(config)
    assert not (tmp_path / "b-out").exists()
    monkeypatch.setattr(dreambooth, "dreambooth_loss", real_loss)
    resumed = dreambooth.dreambooth(config)

    assert resumed.resumed_from == 2
    assert _rows(tmp_path / "b") == _rows(tmp_path / "a")
    for name in sorted(p.name for p in straight.out.rglob("*.safetensors")):
        a = load_file(str(next(straight.out.rglob(name))))
        b = load_file(str(next(resumed.out.rglob(name))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_class_images_are_generated_once_and_reused(db_config, tmp_path, monkeypatch) -> None:
    calls = []
    real = sampling.generate_tensors

    def counting(pipe, prompts, *args, **kwargs):
        calls.append(list(prompts))
        return real(pipe, prompts, *args, **kwargs)

    monkeypatch.setattr(sampling, "generate_tensors", counting)
    dreambooth.dreambooth(db_config("train.steps=1"))
    assert calls == [["a star", "a star"]]
    folders = list((tmp_path / "run" / CLASS_IMAGES_DIR).iterdir())
    assert len(folders) == 1 and sorted(p.name for p in folders[0].glob("*.png")) == [
        "00000.png",
        "00001.png",
    ]
    made = {p: p.stat().st_mtime_ns for p in folders[0].glob("*.png")}

    # Continuing the run (more steps) reuses them; so does a run killed after generating them.
    dreambooth.dreambooth(db_config("train.steps=2", "overwrite=true"))
    assert len(calls) == 1
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in made.items())
    # Other generation settings never reuse them.
    dreambooth.dreambooth(
        db_config("train.steps=1", "overwrite=true", "class_seed=7", f"run_dir={tmp_path / 'run2'}")
    )
    assert len(list((tmp_path / "run2" / CLASS_IMAGES_DIR).iterdir())) == 1 and len(calls) == 2


def test_varied_class_prompts_give_each_class_image_its_own_prompt_and_conditioning(
    db_config, tmp_path, monkeypatch
) -> None:
    prompts = tmp_path / "class-prompts.txt"
    prompts.write_text("# two captions\na large red star at the left on a blue background\n\na star\n")
    calls, conds = [], []
    real_generate, real_loss = sampling.generate_tensors, dreambooth.dreambooth_loss

    def counting(pipe, texts, *args, **kwargs):
        calls.append(list(texts))
        return real_generate(pipe, texts, *args, **kwargs)

    def spy(model, scheduler, latents, cond, num_instance, *args):
        conds.append(cond[num_instance:].clone())
        return real_loss(model, scheduler, latents, cond, num_instance, *args)

    monkeypatch.setattr(sampling, "generate_tensors", counting)
    monkeypatch.setattr(dreambooth, "dreambooth_loss", spy)
    config = db_config(f"class_prompts_file={prompts}", "num_class_images=3", "train.steps=5")
    report = dreambooth.dreambooth(config)
    red = "a large red star at the left on a blue background"
    assert calls == [[red, "a star", red]]
    # One epoch (5 pairs, class images 0 1 2 0 1) conditions on both prompts, each by its own states.
    distinct = []
    for cond in conds:
        if not any(torch.equal(cond, seen) for seen in distinct):
            distinct.append(cond)
    assert len(conds) == 5 and len(distinct) == 2
    assert json.loads((report.out / "unet" / PROVENANCE_FILE).read_text())["class_prompts"] == 2
    # A class prompt naming the identifier, or a file without prompts, is refused up front.
    prompts.write_text("a sks star at the left\n")
    with pytest.raises(EdgefusionError, match="contains the identifier"):
        db_config(f"class_prompts_file={prompts}", "identifier=sks")
    prompts.write_text("# nothing\n")
    with pytest.raises(EdgefusionError, match="holds no prompt"):
        db_config(f"class_prompts_file={prompts}")


def test_without_prior_preservation_no_class_image_is_made(db_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sampling, "generate_tensors", lambda *a, **k: pytest.fail("generated class images"))
    report = dreambooth.dreambooth(db_config("prior_preservation=false", "train.steps=2"))
    assert "prior" not in _rows(report.run_dir)[0]
    assert not (tmp_path / "run" / CLASS_IMAGES_DIR).exists()


def test_an_lcm_trains_with_its_guidance_embedding_and_stays_an_lcm(db_config, tmp_path, monkeypatch) -> None:
    lcm = write_lcm_pipeline(tmp_path / "lcm")
    seen = []
    real_forward = SubjectModel.forward

    def spy(self, sample, timestep, cond):
        seen.append(self.guidance)
        return real_forward(self, sample, timestep, cond)

    monkeypatch.setattr(SubjectModel, "forward", spy)
    report = dreambooth.dreambooth(db_config(f"model={lcm}", "train.steps=2", "guidance_scale=3.0"))

    assert len(seen) == 2 and torch.equal(seen[0], guidance_embedding(torch.tensor([2.0]), 16))
    assert json.loads((report.out / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == (
        "LCMScheduler"
    )
    pipe = load_pipeline(report.out)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.unet.config.time_cond_proj_dim == 16
    assert _image(pipe).shape == (1, 3, 16, 16)


def test_an_lcm_lora_folder_samples_as_an_lcm(db_config, tmp_path) -> None:
    lcm = write_lcm_pipeline(tmp_path / "lcm")
    report = dreambooth.dreambooth(db_config(f"model={lcm}", "lora.rank=2", "train.steps=2"))
    pipe = load_pipeline(report.out)
    assert isinstance(pipe.scheduler, LCMScheduler)


def test_adapters_trained_on_the_parent_model_sample_on_its_lcm(
    db_config, tmp_path, teacher_pipeline
) -> None:
    """``lora.sample_on``: the folder records the LCM as its base (and the trained model beside it),
    loads as that LCM with the adapters fused in, and samples with its scheduler."""
    lcm = write_lcm_pipeline(tmp_path / "lcm")
    report = dreambooth.dreambooth(
        db_config(f"lora.sample_on={lcm}", "lora.rank=2", "train.steps=2", "train.learning_rate=5e-2")
    )
    provenance = json.loads((report.out / PROVENANCE_FILE).read_text())
    assert provenance["base"] == str(lcm.resolve()) and provenance["trained_on"] == str(
        teacher_pipeline.resolve()
    )
    personalized, plain = load_pipeline(report.out), load_pipeline(lcm)
    assert isinstance(personalized.scheduler, LCMScheduler)
    weights, own = personalized.unet.state_dict(), plain.unet.state_dict()
    changed = [name for name in own if not torch.equal(weights[name], own[name])]
    assert changed and all(any(t in name for t in ("to_q", "to_k", "to_v", "to_out")) for name in changed)


def test_adapters_that_would_not_fit_the_model_to_sample_on_are_refused_before_training(
    db_config, tmp_path
) -> None:
    narrow = write_pipeline(tmp_path / "narrow", random_unet(micro_unet_config((16, 32, 32, 32))))
    with pytest.raises(EdgefusionError, match="does not fit adapters trained on"):
        dreambooth.dreambooth(db_config(f"lora.sample_on={narrow}", "lora.rank=2"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
    with pytest.raises(EdgefusionError, match="lora.sample_on needs lora.rank"):
        db_config(f"lora.sample_on={narrow}")


@pytest.mark.parametrize(
    "instance,cls,identifier,expected",
    [
        ("a sks star", "a star", None, "sks"),
        ("a photo of sks dog", "a photo of a dog", None, "sks"),
        ("a sks star on a blue background", "a star", "sks", "sks"),
    ],
)
def test_the_identifier_is_derived_or_checked(instance, cls, identifier, expected) -> None:
    assert subject_identifier(instance, cls, identifier) == expected


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("instance_prompt=a star",), "the class prompt is the instance prompt"),
        (("instance_prompt=a yellow star", "identifier=sks"), "does not contain the identifier 'sks'"),
        (("instance_prompt=star a",), "has no word the class prompt"),
        (("class_prompt=a sks star thing", "identifier=sks"), "contains the identifier"),
        (("class_prompt=",), "set class_prompt"),
        (("lora.rank=0",), "lora.rank must be at least 1"),
    ],
)
def test_bad_prompts_and_settings_are_clear_errors_before_anything_is_written(
    db_config, tmp_path, overrides, message
) -> None:
    with pytest.raises(EdgefusionError, match=message):
        dreambooth.dreambooth(db_config(*overrides))
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_an_instance_folder_without_a_readable_image_is_a_clear_error(db_config, tmp_path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(EdgefusionError, match="1 image file\\(s\\), none readable"):
        dreambooth.dreambooth(db_config(f"instance_images={folder}"))
    (folder / "a.png").unlink()
    with pytest.raises(EdgefusionError, match="holds no image file"):
        dreambooth.dreambooth(db_config(f"instance_images={folder}"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_unreadable_instance_images_are_skipped_with_a_warning(db_config, tmp_path, instances) -> None:
    folder = tmp_path / "some-broken"
    folder.mkdir()
    for image in sorted(instances.glob("*.png"))[:2]:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "zz-broken.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipped unreadable instance image .*zz-broken.png"):
        report = dreambooth.dreambooth(db_config(f"instance_images={folder}", "train.steps=1"))
    assert report.skipped["corrupt"] == 1
    record = json.loads((report.out / "unet" / PROVENANCE_FILE).read_text())
    # Without caption files both images train on the one instance prompt.
    assert record["instance_images"] == 2 and record["instance_prompts"] == 1


def test_instance_images_train_on_their_own_captions(db_config, tmp_path, instances) -> None:
    """The toy instance images carry caption files (their contexts): five images, five prompts;
    a caption that does not name the identifier is an error before anything is written."""
    images = dreambooth.read_instance_images(instances, "a sks star", "sks")
    assert len(set(images.prompts)) == 5 and all("sks star at the" in p for p in images.prompts)
    report = dreambooth.dreambooth(db_config("train.steps=1", "prior_preservation=false"))
    assert json.loads((report.out / "unet" / PROVENANCE_FILE).read_text())["instance_prompts"] == 5

    folder = tmp_path / "captioned"
    folder.mkdir()
    image = sorted(instances.glob("*.png"))[0]
    (folder / image.name).write_bytes(image.read_bytes())
    (folder / image.with_suffix(".txt").name).write_text("a large star at the left on a blue background\n")
    with pytest.raises(EdgefusionError, match="does not name the identifier 'sks'"):
        dreambooth.dreambooth(
            db_config(f"instance_images={folder}", f"out={tmp_path / 'o2'}", f"run_dir={tmp_path / 'r2'}")
        )
    assert not (tmp_path / "o2").exists() and not (tmp_path / "r2").exists()


def test_the_command_line_runs_a_micro_dreambooth(db_config, tmp_path, teacher_pipeline, instances) -> None:
    from edgefusion.cli import _register_subcommands, app

    _register_subcommands()
    help_text = CliRunner().invoke(app, ["dreambooth", "--help"]).output
    for option in ("--model", "--instance-images", "--instance-prompt", "--class-prompt", "--out", "--lora"):
        assert option in help_text
    config = tmp_path / "db.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run'}\nnum_class_images: 1\nclass_steps: 1\ntrain:\n  steps: 1\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "dreambooth",
            "--config", str(config),
            "--model", str(teacher_pipeline),
            "--instance-images", str(instances),
            "--instance-prompt", "a sks star",
            "--class-prompt", "a star",
            "--out", str(tmp_path / "cli-out"),
            "--lora", "2",
            "train.learning_rate=1e-4",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli-out" / LORA_WEIGHTS).is_file()
    saved = load_config(DreamBoothConfig, tmp_path / "cli-out" / dreambooth.CONFIG_NAME)
    assert (
        saved.lora.rank == 2 and saved.train.learning_rate == 1e-4 and saved.instance_prompt == "a sks star"
    )
