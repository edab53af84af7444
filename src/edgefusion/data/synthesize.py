"""Stage ``synthesize``: generate image-text pairs from balanced prompts (the paper's ``synt``).

Prompts come from templates, a prompt file or a prompt source a world registered (the toy
world's grammar, ``toy``), optionally rewritten by an LLM; images come from any diffusers pipeline
folder or model name (``toy:teacher``, SDXL) or from a renderer a world registered (``toy:render``,
the shapes renderer: exact images of each prompt, with the attribute ``record``). Sample ``i``
uses seed ``seed + i`` and its own generator, so images do not depend on batching or resuming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgefusion.config import require
from edgefusion.data.dataset import Item
from edgefusion.data.images import encode_png
from edgefusion.data.prompts import rewrite_with_endpoint, rewrite_with_local_llm, template_prompts
from edgefusion.data.registry import PROMPT_SOURCES, RENDERERS, Renderer
from edgefusion.data.runner import Outcome, RunOptions, run_stage
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import check_model_folder
from edgefusion.pipeline.sources import resolve_model_path

#: Prompt sources of every install; worlds register more (:data:`~edgefusion.data.registry.PROMPT_SOURCES`).
BUILT_IN_PROMPTS = ("templates", "file")


@dataclass
class SynthConfig:
    """How many pairs, from which prompts, rewritten by which LLM, drawn by which generator."""

    n: int = 1000
    seed: int = 0
    prompts: str = "toy"
    templates: tuple[str, ...] = ()
    slots: dict[str, list[str]] | None = None
    prompt_file: str | None = None
    llm_model: str | None = None
    llm_endpoint: str | None = None
    llm_api_model: str = "gpt-4"
    #: Environment variable holding the endpoint's API key (read when called, never saved).
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_instruction: str = "Rewrite as one detailed image-generation prompt, nothing else: {prompt}"
    generator: str = "toy:render"
    steps: int = 25
    guidance: float | None = None  # None: the generator's recorded guidance (else 7.5)
    size: int = 64
    batch_size: int = 16

    def __post_init__(self) -> None:
        require(self.n >= 1, "n must be at least 1")
        sources = [*PROMPT_SOURCES.names(), *BUILT_IN_PROMPTS]
        require(self.prompts in sources, f"prompts must be one of {', '.join(sources)}")
        require(not (self.llm_model and self.llm_endpoint), "give llm_model or llm_endpoint, not both")
        require(self.prompts != "file" or bool(self.prompt_file), "prompts: file needs prompt_file")
        require(self.prompts != "templates" or bool(self.templates), "prompts: templates needs templates")
        require(
            self.steps >= 1 and self.batch_size >= 1 and self.size >= 8, "steps, batch_size, size too small"
        )
        require(self.guidance is None or math.isfinite(self.guidance), "guidance must be a finite number")


def make_prompts(config: SynthConfig) -> list[str]:
    """The ``n`` prompts of a run, before any LLM rewriting."""
    if config.prompts not in BUILT_IN_PROMPTS:
        return PROMPT_SOURCES.get(config.prompts)(config.n, config.seed)
    if config.prompts == "templates":
        return template_prompts(config.templates, config.slots or {}, config.n, config.seed)
    path = Path(config.prompt_file)
    if not path.is_file():
        raise EdgefusionError(f"prompt file {path} not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise EdgefusionError(f"prompt file {path} holds no prompts")
    return [lines[i % len(lines)] for i in range(config.n)]


@lru_cache(maxsize=1)
def _pipeline(spec: str):
    from edgefusion.pipeline.load import load_pipeline  # torch loads only when a model generates

    return load_pipeline(spec)


def generate_with_pipeline(
    prompts: list[str], seeds: list[int], config: SynthConfig
) -> list[tuple[Any, None]]:
    """Images of a diffusers text-to-image pipeline, one seeded generator per image."""
    from PIL import Image

    from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults

    pipe = _pipeline(config.generator)
    _, guidance = sampling_defaults(pipe, config.generator, config.steps, config.guidance)
    images = generate_tensors(pipe, prompts, seeds, config.steps, guidance)
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [(Image.fromarray(array), None) for array in pixels]


@dataclass
class SynthStage:
    """Generates chunks; ``render`` is the renderer of ``config.generator`` (looked up where the
    run starts), None when the generator is a model."""

    config: SynthConfig
    render: Renderer | None
    name: str = "synthesize"
    writes_images: bool = True

    def process(self, items: list[Item]) -> list[Outcome]:
        config = self.config
        prompts = [item.row["prompt"] for item in items]
        if config.llm_endpoint:
            prompts = rewrite_with_endpoint(
                prompts,
                config.llm_endpoint,
                config.llm_api_model,
                config.llm_instruction,
                config.llm_api_key_env,
            )
        elif config.llm_model:
            prompts = rewrite_with_local_llm(prompts, config.llm_model, config.llm_instruction)
        seeds = [item.row["seed"] for item in items]
        if self.render is not None:
            generated = self.render(prompts, seeds, config.size)
        else:
            generated = []
            for start in range(0, len(items), config.batch_size):
                stop = start + config.batch_size
                generated += generate_with_pipeline(prompts[start:stop], seeds[start:stop], config)
        outcomes = []
        for item, text, (image, record) in zip(items, prompts, generated, strict=True):
            row = {
                **item.row,
                "text": text,
                "generator": config.generator,
                "width": image.width,
                "height": image.height,
            }
            if record is not None:
                row["record"] = record
            outcomes.append(Outcome(item.id, row=row, data=encode_png(image), ext="png"))
        return outcomes


def synthesize(out: str | Path, config: SynthConfig | None = None, options: RunOptions | None = None) -> dict:
    """Generate ``config.n`` image-text pairs into the dataset folder ``out``."""
    config = config or SynthConfig()
    render = RENDERERS.find(config.generator)
    if render is None:  # a corrupt model fails here, before a run folder exists
        check_model_folder(resolve_model_path(config.generator))
    items = (
        Item(id=f"{i:08d}", row={"prompt": prompt, "seed": config.seed + i})
        for i, prompt in enumerate(make_prompts(config))
    )
    return run_stage(SynthStage(config, render), items, out, options, source=None, total=config.n)
