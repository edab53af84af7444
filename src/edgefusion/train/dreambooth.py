"""DreamBooth personalization of a compact model: ``edgefusion dreambooth``.

DreamBooth (Ruiz et al., "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for
Subject-Driven Generation", 2023) teaches a model one subject from a few images. Its instance
prompt names the subject by a rare identifier word and its class ("a sks star"); the model is
fine-tuned with SD's denoising objective on those images, and, so that it does not forget what
the class looks like in general (nor let every star become the subject), on images the model
itself generated for the class prompt ("a star"), the prior-preservation term:

    loss = MSE(instance) + prior_loss_weight * MSE(class images)

Both halves go through one U-Net call, as in diffusers' DreamBooth script. The class images are
generated once by the source model with its own scheduler and guidance, cached in the run folder
under a key of their settings, and reused by a resumed or repeated run.

What trains: the whole U-Net (optionally the text encoder too), or, with ``lora.rank``, LoRA
adapters on the U-Net's attention projections (and the text encoder's) through ``peft``
(:mod:`edgefusion.train.lora`). A full fine-tune writes a pipeline folder (the source's, with the
trained U-Net); LoRA writes diffusers' ``pytorch_lora_weights.safetensors`` and records its base,
so ``pipe.load_lora_weights(out)`` and every edgefusion command that samples (``--model out``)
use it. An LCM source (a U-Net with a guidance embedding, ``time_cond_proj_dim``) trains with the
same loss, its U-Net called with the embedding of the guidance it samples with, and its output
keeps the LCMScheduler and the embedding.

The identifier is ``identifier`` when set, else derived: the words of the instance prompt that
the class prompt lacks ("a sks star" minus "a star" is "sks"). An instance prompt without it, a
class prompt equal to the instance prompt or one that contains the identifier, and an instance
folder with no readable image are errors before anything is written; unreadable files among
readable ones are skipped with a warning and counted as ``corrupt``. An instance image may carry
its own caption (``NAME.txt`` beside it, naming the identifier), as diffusers' DreamBooth script
takes custom instance prompts: "a large sks star at the left on a blue background" tells the model
which of the image's attributes belong to the subject.

Everything else is the run every training stage shares (:mod:`~edgefusion.train.stage`): the
accelerate loop (resume, logs, checkpoints, optional EMA, off by default) and the output writer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edgefusion.atomic import atomic_output_dir
from edgefusion.config import require, save_config
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import IMAGE_EXTENSIONS
from edgefusion.pipeline.lcm import guidance_embedding, is_lcm
from edgefusion.pipeline.registry import model_source
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.provenance import DEFAULT_GUIDANCE, PROVENANCE_FILE, recorded_guidance
from edgefusion.train.config import LoopConfig
from edgefusion.train.data import (
    SKIP_REASONS,
    SampleRef,
    encode_images,
    encode_text,
    image_to_tensor,
    load_frozen_encoders,
    native_resolution,
    read_image,
    tokenize,
)
from edgefusion.train.loop import RESUMABLE_KEYS, train
from edgefusion.train.lora import (
    LoRAConfig,
    add_lora,
    check_adapters_fit,
    check_text_encoder_lora,
    save_lora_weights,
)
from edgefusion.train.losses import forward_process
from edgefusion.train.models import load_unet, pipeline_folder
from edgefusion.train.stage import StageReport, StageRun, open_stage

CONFIG_NAME = "dreambooth.yaml"
CLASS_IMAGES_DIR = "class-images"
#: Settings a resumed run may change besides the shared ones: how many class images are
#: generated per call does not change their pixels (each has its own seed).
MAY_CHANGE = (*RESUMABLE_KEYS, "class_batch_size")


@dataclass
class DreamBoothLoopConfig(LoopConfig):
    """The shared loop settings with DreamBooth's defaults: a few hundred steps of batch 1 at a
    low rate (5e-6 for a full fine-tune; LoRA wants about 1e-4), no EMA."""

    steps: int = 400
    batch_size: int = 1
    learning_rate: float = 5e-6
    ema_decay: float | None = None
    checkpoint_every: int = 100


@dataclass
class DreamBoothConfig:
    """``edgefusion dreambooth``: the model, the subject, the prior, what trains, where it goes.

    - ``model``: the SD-layout pipeline folder (or ``toy:NAME``) to personalize; an LCM stays one.
    - ``instance_images``: a folder of the subject's images (a handful; unreadable files skipped).
    - ``instance_prompt``: the prompt of the instance images, with the identifier ("a sks star");
      an image with a caption file beside it (``NAME.txt``) is trained on that caption instead.
    - ``class_prompt``: the subject's class ("a star"): the class images' prompt.
    - ``class_prompts_file``: a text file of class prompts, one a line (``#`` starts a comment
      line), to vary the class images (class image ``k`` gets prompt ``k`` mod their number, "a
      large red star at the left on a blue background"); null: every class image gets
      ``class_prompt``. None may hold the identifier.
    - ``identifier``: the subject's identifier; null derives it (instance prompt minus the class
      prompt's words).
    - ``prior_preservation``: train on class images too; ``prior_loss_weight`` weighs their term.
    - ``num_class_images``: class images generated by ``model`` (seeds ``class_seed + k``) with
      ``class_steps`` and ``class_guidance`` (null: the model's own defaults, as ``generate``).
    - ``train_text_encoder``: fine-tune the text encoder too (LoRA: give it adapters), at
      ``text_encoder_lr`` (null: ``train.learning_rate``).
    - ``lora``: LoRA adapters instead of a full fine-tune (``lora.rank``).
    - ``resolution``: image side (null: the model's); instance images are centre-cropped to it.
    - ``sample_posterior``: latents sampled from the VAE posterior (SD) or its mean.
    - ``guidance_scale``: the guidance the output records for sampling (null: the model's). An LCM
      is trained with the embedding of this scale.
    """

    model: str = ""
    instance_images: str = ""
    instance_prompt: str = ""
    class_prompt: str = ""
    class_prompts_file: str | None = None
    identifier: str | None = None
    out: str = "runs/dreambooth/out"
    run_dir: str = "runs/dreambooth/run"
    overwrite: bool = False
    prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    num_class_images: int = 100
    class_steps: int | None = None
    class_guidance: float | None = None
    class_seed: int = 0
    class_batch_size: int = 8
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    resolution: int | None = None
    sample_posterior: bool = True
    guidance_scale: float | None = None
    save_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    train: DreamBoothLoopConfig = field(default_factory=DreamBoothLoopConfig)

    def __post_init__(self) -> None:
        require(bool(self.model), "set model (a pipeline folder or toy:NAME): the model to personalize")
        require(bool(self.instance_images), "set instance_images (a folder of the subject's images)")
        require(bool(self.instance_prompt.strip()), "set instance_prompt (e.g. 'a sks star')")
        require(
            bool(self.class_prompt.strip()) or (self.identifier and not self.prior_preservation),
            "set class_prompt (e.g. 'a star'): the prompt of the class images, and what the "
            "identifier is told apart from",
        )
        identifier = subject_identifier(self.instance_prompt, self.class_prompt, self.identifier)
        if self.class_prompts_file is not None and self.prior_preservation:
            for prompt in class_prompts(self):
                subject_identifier(self.instance_prompt, prompt, identifier)
        require(self.prior_loss_weight >= 0, "prior_loss_weight must be 0 or more")
        require(self.num_class_images >= 1, "num_class_images must be at least 1")
        require(self.class_steps is None or self.class_steps >= 1, "class_steps must be at least 1")
        require(self.class_batch_size >= 1, "class_batch_size must be at least 1")
        require(self.text_encoder_lr is None or self.text_encoder_lr > 0, "text_encoder_lr must be positive")
        require(self.resolution is None or self.resolution >= 8, "resolution must be at least 8")
        require(
            self.guidance_scale is None or self.guidance_scale >= 1,
            "guidance_scale must be 1 (no guidance) or more, or null for the model's",
        )


def class_prompts(config: DreamBoothConfig) -> list[str]:
    """The distinct prompts of the class images: the lines of ``class_prompts_file`` (blank ones
    and ``#`` comments skipped), else ``class_prompt``."""
    if config.class_prompts_file is None:
        return [config.class_prompt]
    path = Path(config.class_prompts_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise EdgefusionError(f"class_prompts_file {path} cannot be read: {error}") from error
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise EdgefusionError(f"class_prompts_file {path} holds no prompt (one a line)")
    return prompts


def _words(text: str) -> list[str]:
    return text.lower().replace(",", " ").split()


def subject_identifier(instance_prompt: str, class_prompt: str, identifier: str | None) -> str:
    """The identifier the instance prompt names the subject by: ``identifier`` when given (it must
    be a word or words of the instance prompt and not of the class prompt), else the instance
    prompt's words that the class prompt lacks, in order."""
    instance, cls = _words(instance_prompt), _words(class_prompt)
    if cls and instance == cls:
        raise EdgefusionError(
            f"the class prompt is the instance prompt ({instance_prompt!r}): the instance prompt names "
            "the subject by an identifier the class prompt lacks, e.g. 'a sks star' and 'a star'"
        )
    if identifier is None:
        derived = [word for word in instance if word not in cls]
        if not derived:
            raise EdgefusionError(
                f"the instance prompt {instance_prompt!r} has no word the class prompt {class_prompt!r} "
                "lacks: put the subject's identifier in it (e.g. 'a sks star' for 'a star'), or set "
                "identifier"
            )
        return " ".join(derived)
    wanted = _words(identifier)
    spans = [instance[i : i + len(wanted)] for i in range(len(instance))]
    if not wanted or wanted not in spans:
        raise EdgefusionError(
            f"the instance prompt {instance_prompt!r} does not contain the identifier {identifier!r}: "
            f"write it in (e.g. 'a {identifier} star')"
        )
    if any(word in cls for word in wanted):
        raise EdgefusionError(
            f"the class prompt {class_prompt!r} contains the identifier {identifier!r}: the class "
            "prompt names the class alone (e.g. 'a star')"
        )
    return " ".join(wanted)


@dataclass
class InstanceImages:
    """The decodable instance images, each one's prompt, and the image files skipped."""

    images: list[Any]
    prompts: list[str]
    skipped: list[Path]


def read_instance_images(folder: Path, default_prompt: str, identifier: str) -> InstanceImages:
    """The decodable images of ``folder`` (top level, by name), each with its prompt, and the
    image files skipped as unreadable (each warned about); an error when none can be read.

    An image's prompt is the first line of a caption file beside it (``dog1.png``: ``dog1.txt``),
    else ``default_prompt``. A caption says what else the image shows ("a large sks star at the
    left on a blue background"), so the model ties the identifier to the subject alone, not to
    the instance images' backgrounds and places; it must name the identifier."""
    if not folder.is_dir():
        raise EdgefusionError(
            f"instance_images {folder} is not a folder: give the folder of the subject's images"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    images, prompts, skipped = [], [], []
    for file in files:
        image = read_image(SampleRef("", str(file)))
        if image is None:
            warnings.warn(f"skipped unreadable instance image {file}", UserWarning, stacklevel=2)
            skipped.append(file)
        else:
            images.append(image)
            prompts.append(_instance_caption(file, identifier) or default_prompt)
    if not images:
        found = f"{len(files)} image file(s), none readable" if files else "no image file"
        raise EdgefusionError(
            f"instance_images {folder} holds {found} ({', '.join(IMAGE_EXTENSIONS)}): "
            "give a folder with the subject's images"
        )
    return InstanceImages(images, prompts, skipped)


def _instance_caption(image: Path, identifier: str) -> str | None:
    """The first line of ``image``'s caption file, or None when it has none (or an empty one)."""
    file = image.with_suffix(".txt")
    if not file.is_file():
        return None
    try:
        lines = file.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise EdgefusionError(f"cannot read the caption file {file}: {err}") from err
    caption = lines[0].strip() if lines else ""
    if caption and not set(_words(identifier)) <= set(_words(caption)):
        raise EdgefusionError(
            f"the caption {caption!r} of {file} does not name the identifier {identifier!r}: "
            f"write it in (e.g. 'a {identifier} star at the left')"
        )
    return caption or None


class SubjectModel(nn.Module):
    """The U-Net (and, when it trains, the text encoder) as one module, so DDP, EMA and checkpoints
    treat both alike. ``cond`` is text states, or token ids when the text encoder is inside; an
    LCM U-Net also gets the guidance embedding it samples with (``timestep_cond``)."""

    def __init__(
        self, unet: nn.Module, text_encoder: nn.Module | None, guidance: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.register_buffer("guidance", guidance, persistent=False)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> Any:
        states = self.text_encoder(cond)[0] if self.text_encoder is not None else cond
        timestep_cond = None
        if self.guidance is not None:
            timestep_cond = self.guidance.expand(len(sample), -1).to(sample.dtype)
        return self.unet(sample, timestep, states, timestep_cond=timestep_cond)


class SubjectPairs(Dataset):
    """Pair ``i``: instance image ``i mod n_instance`` and, with prior preservation, class image
    ``i mod n_class`` (each as VAE posterior mean and std, and the index of its prompt among the
    instance or class prompts), so an epoch covers the larger set."""

    def __init__(
        self,
        instance: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        prior: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    ) -> None:
        self.instance, self.prior = instance, prior

    def __len__(self) -> int:
        return max(len(self.instance[0]), len(self.prior[0]) if self.prior is not None else 0)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mean, std, prompt = self.instance
        i = index % len(mean)
        item = {"instance_mean": mean[i], "instance_std": std[i], "instance_prompt": prompt[i]}
        if self.prior is not None:
            mean, std, prompt = self.prior
            k = index % len(mean)
            item.update(class_mean=mean[k], class_std=std[k], class_prompt=prompt[k])
        return item


@dataclass
class SubjectData:
    """The encoded pairs, the conditioning of the instance and the class prompts (text states, or
    token ids when the text encoder trains; a pair names its prompts by index), and the images
    skipped as unreadable."""

    dataset: SubjectPairs
    instance_cond: torch.Tensor
    class_cond: torch.Tensor | None
    skipped: Counter[str]

    def skip_counts(self, corrupt_in_stream: int) -> dict[str, int]:
        """Skipped images per reason (:data:`~edgefusion.train.data.SKIP_REASONS`); the stream
        reads encoded images only, so it skips none of its own."""
        counts = Counter(self.skipped)
        counts["corrupt"] += corrupt_in_stream
        return {reason: counts[reason] for reason in SKIP_REASONS}


def dreambooth_loss(
    model: nn.Module,
    noise_scheduler: Any,
    latents: torch.Tensor,
    cond: torch.Tensor,
    num_instance: int,
    prior_loss_weight: float,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """SD's denoising loss on a batch whose first ``num_instance`` samples are instance images and
    the rest class images, in one U-Net call: ``instance + prior_loss_weight * prior``."""
    noisy, timesteps, target = forward_process(noise_scheduler, latents, gen)
    pred = model(noisy, timesteps, cond).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    instance = per_sample[:num_instance].mean()
    if len(per_sample) == num_instance:
        return {"loss": instance, "instance": instance.detach()}
    prior = per_sample[num_instance:].mean()
    return {
        "loss": instance + prior_loss_weight * prior,
        "instance": instance.detach(),
        "prior": prior.detach(),
    }


def class_images_folder(config: DreamBoothConfig, resolution: int) -> Path:
    """Where the class images of these settings are cached: under the run folder, keyed by
    everything that changes their pixels, so other settings never reuse them."""
    settings = {
        "model": str(config.model),
        "prompt": config.class_prompt if config.class_prompts_file is None else class_prompts(config),
        "steps": config.class_steps,
        "guidance": config.class_guidance,
        "seed": config.class_seed,
        "size": resolution,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(config.run_dir) / CLASS_IMAGES_DIR / key


def class_images(config: DreamBoothConfig, run: StageRun, resolution: int) -> list[Path]:
    """The first ``num_class_images`` class images, generated by the main process where missing
    (``edgefusion generate``'s seeded, resumable writer: a re-run keeps what is there)."""
    from edgefusion.generate import generate
    from edgefusion.pipeline.load import load_pipeline

    folder = class_images_folder(config, resolution)
    if run.accelerator.is_main_process:
        pipe = load_pipeline(config.model).to(run.accelerator.device)
        existing = len(list(folder.glob("*.png"))) if folder.is_dir() else 0
        count = max(config.num_class_images, existing)
        prompts, n = [config.class_prompt], count
        if config.class_prompts_file is not None:
            distinct = class_prompts(config)
            prompts, n = [distinct[k % len(distinct)] for k in range(count)], 1
        generate(
            prompts,
            config.model,
            out=folder,
            steps=config.class_steps,
            guidance=config.class_guidance,
            seed=config.class_seed,
            n=n,
            size=resolution,
            batch_size=config.class_batch_size,
            pipe=pipe,
        )
        del pipe
    run.accelerator.wait_for_everyone()
    return [folder / f"{k:05d}.png" for k in range(config.num_class_images)]


def encode_subject_data(
    config: DreamBoothConfig, run: StageRun, pipeline: Path, instances: InstanceImages
) -> SubjectData:
    """Encode instance and class images once with the frozen VAE, and their prompts with the
    frozen text encoder (or as token ids, when it trains)."""
    resolution = config.resolution or native_resolution(pipeline)
    skips: Counter[str] = Counter(corrupt=len(instances.skipped))
    prior_images: list[Any] = []
    prompts = class_prompts(config) if config.prior_preservation else []
    prompt_index: list[int] = []
    if config.prior_preservation:
        for k, file in enumerate(class_images(config, run, resolution)):
            image = read_image(SampleRef(prompts[k % len(prompts)], str(file)))
            if image is None:
                skips["corrupt"] += 1
            else:
                prior_images.append(image)
                prompt_index.append(k % len(prompts))
        if not prior_images:
            raise EdgefusionError(
                f"no class image under {file.parent} can be read: delete the folder to remake it"
            )
    encoders = load_frozen_encoders(pipeline, run.accelerator.device, run.dtype)

    def latents(images: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([image_to_tensor(image, resolution) for image in images])
        parts = [encode_images(encoders.vae, chunk) for chunk in pixels.split(16)]
        return torch.cat([m for m, _ in parts]).float().cpu(), torch.cat([s for _, s in parts]).float().cpu()

    def cond(prompts: list[str]) -> torch.Tensor:
        if config.train_text_encoder:
            return tokenize(encoders.tokenizer, prompts).to(run.accelerator.device)
        return encode_text(encoders.tokenizer, encoders.text_encoder, prompts).float()

    prior = (*latents(prior_images), torch.tensor(prompt_index)) if prior_images else None
    instance_prompts = sorted(set(instances.prompts))
    instance_index = torch.tensor([instance_prompts.index(p) for p in instances.prompts])
    dataset = SubjectPairs((*latents(instances.images), instance_index), prior)
    class_cond = cond(prompts) if prior is not None else None
    return SubjectData(dataset, cond(instance_prompts), class_cond, skips)


def subject_model(config: DreamBoothConfig, run: StageRun, pipeline: Path) -> SubjectModel:
    """The model that trains: the source's U-Net (and text encoder), whole or with LoRA adapters,
    and an LCM's guidance embedding."""
    unet = load_unet(config.model, "model")
    text_encoder = None
    if config.train_text_encoder:
        from transformers import CLIPTextModel

        text_encoder = CLIPTextModel.from_pretrained(pipeline, subfolder="text_encoder")
    if config.lora.rank is None:
        unet.float().requires_grad_(True)
        if text_encoder is not None:
            text_encoder.float().requires_grad_(True)
    else:
        # The frozen base in the mixed-precision dtype, its adapters in float32.
        add_lora(unet.to(run.dtype), config.lora, config.lora.unet_targets, config.train.seed)
        if text_encoder is not None:
            add_lora(
                text_encoder.to(run.dtype), config.lora, config.lora.text_encoder_targets, config.train.seed
            )
    guidance = None
    if is_lcm(unet):
        w = torch.tensor([sampling_guidance(config) - 1.0])
        guidance = guidance_embedding(w, unet.config.time_cond_proj_dim)
    return SubjectModel(unet, text_encoder, guidance).train()


def sampling_guidance(config: DreamBoothConfig) -> float:
    """The guidance the output samples with: the config's, else the one the model it samples on
    records (the source, or ``lora.sample_on``)."""
    if config.guidance_scale is not None:
        return config.guidance_scale
    recorded = recorded_guidance(resolve_model_path(config.lora.sample_on or config.model))
    return recorded if recorded is not None else DEFAULT_GUIDANCE


def dreambooth(config: DreamBoothConfig) -> StageReport:
    """Personalize ``config.model`` with the subject of ``config.instance_images`` and write the
    result (a pipeline folder, or a LoRA folder). Re-running resumes from the newest checkpoint in
    ``config.run_dir``, reusing its class images; under ``accelerate launch`` it runs data-parallel."""
    # 1. Everything a user can get wrong is checked before anything is written: the identifier
    #    (by the config), the instance images, the source pipeline, then the run's paths.
    identifier = subject_identifier(config.instance_prompt, config.class_prompt, config.identifier)
    instances = read_instance_images(Path(config.instance_images), config.instance_prompt, identifier)
    if config.lora.rank is not None and config.train_text_encoder:
        check_text_encoder_lora()
    pipeline = pipeline_folder(config.model, "model")
    if config.lora.sample_on is not None:
        sample_on = pipeline_folder(config.lora.sample_on, "lora.sample_on")
        check_adapters_fit(pipeline, sample_on, config.lora.unet_targets)
    run = open_stage(config, [config.model, config.instance_images], MAY_CHANGE)
    noise_scheduler = run.noise_schedule(pipeline)

    # 2. The data: instance images, class images (generated once, cached), both prompts, encoded.
    data = encode_subject_data(config, run, pipeline, instances)

    # 3. The model: whole, or frozen with LoRA adapters; an LCM with its guidance embedding.
    model = subject_model(config, run, pipeline)

    # 4. The objective: instance half and class half in one call.
    def objective(model: nn.Module, batch: dict[str, Any], gen: torch.Generator) -> dict[str, torch.Tensor]:
        halves = [_latents(batch, "instance", config.sample_posterior, gen)]
        conds = [data.instance_cond[batch["instance_prompt"].to(data.instance_cond.device)]]
        if data.class_cond is not None:
            halves.append(_latents(batch, "class", config.sample_posterior, gen))
            conds.append(data.class_cond[batch["class_prompt"].to(data.class_cond.device)])
        latents, cond = torch.cat(halves), torch.cat(conds).to(halves[0].device)
        return dreambooth_loss(
            model, noise_scheduler, latents, cond, len(halves[0]), config.prior_loss_weight, gen
        )

    # 5. Train (resumable), then write the output.
    ema = run.student_ema(model)
    rates = {"text_encoder.": config.text_encoder_lr} if config.text_encoder_lr is not None else None
    # The data is in memory, encoded: no loader workers.
    result = train(
        model,
        objective,
        data.dataset,
        config.train,
        run.run_dir,
        run.accelerator,
        ema=ema,
        desc="dreambooth",
        lr_by_prefix=rates,
    )
    final = run.accelerator.unwrap_model(ema.module if ema is not None else model)
    provenance = _provenance(config, data)
    if config.lora.rank is not None:
        return run.end(lambda record: _write_lora(config, final, {**provenance, **record}), result, data)
    extra = _text_encoder_writer(final.text_encoder) if final.text_encoder is not None else None
    return run.finish(final.unet, pipeline, CONFIG_NAME, provenance, result, data, extra)


def _text_encoder_writer(text_encoder: nn.Module) -> Any:
    """What puts a fine-tuned text encoder in place of the source's in the output folder."""

    def write(folder: Path) -> None:
        shutil.rmtree(folder / "text_encoder")
        text_encoder.to(torch.float32).save_pretrained(folder / "text_encoder")

    return write


def _latents(batch: dict[str, Any], half: str, sample_posterior: bool, gen: torch.Generator) -> torch.Tensor:
    mean = batch[f"{half}_mean"].float()
    if not sample_posterior:
        return mean
    return mean + batch[f"{half}_std"].float() * torch.randn(mean.shape, generator=gen).to(mean.device)


def _provenance(config: DreamBoothConfig, data: SubjectData) -> dict[str, Any]:
    """How the output was made, and the guidance it samples with."""
    method = f"LoRA (rank {config.lora.rank})" if config.lora.rank else "full fine-tune"
    carried = {"trained_on": _model_record(config.model)} if config.lora.sample_on is not None else {}
    return {
        "stage": "dreambooth",
        "method": f"DreamBooth, {method}",
        "base": _model_record(config.lora.sample_on or config.model),
        **carried,
        "instance_prompt": config.instance_prompt,
        "class_prompt": config.class_prompt,
        "class_prompts": len(class_prompts(config)) if config.prior_preservation else 0,
        "identifier": subject_identifier(config.instance_prompt, config.class_prompt, config.identifier),
        "instance_images": len(data.dataset.instance[0]),
        "instance_prompts": len(data.instance_cond),
        "prior_preservation": config.prior_preservation,
        "prior_loss_weight": config.prior_loss_weight if config.prior_preservation else None,
        "class_images": len(data.dataset.prior[0]) if data.dataset.prior is not None else 0,
        "train_text_encoder": config.train_text_encoder,
        "guidance_scale": sampling_guidance(config),
        "ema_decay": config.train.ema_decay,
    }


def _model_record(spec: str) -> str:
    """A model as provenance records it: a registered name (toy:teacher) stays a name; a folder is
    recorded as an absolute path, wherever the run was started from."""
    return spec if model_source(spec) is not None else str(resolve_model_path(spec).resolve())


def _write_lora(config: DreamBoothConfig, model: SubjectModel, record: dict[str, Any]) -> None:
    """The LoRA output: diffusers' LoRA file, the provenance (with the base) and the config."""
    from edgefusion import __version__

    with atomic_output_dir(config.out, config.overwrite) as staging:
        save_lora_weights(staging, model.unet, model.text_encoder)
        record = {
            **record,
            "lora_rank": config.lora.rank,
            "lora_alpha": config.lora.alpha or config.lora.rank,
            "edgefusion_version": __version__,
        }
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        save_config(config, staging / CONFIG_NAME)
