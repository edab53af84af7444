"""``edgefusion data run pipeline.yaml``: chain stages, each writing a numbered folder of the run.

A pipeline file names the input, the run folder, how to run (workers, engine, chunk size) and a
list of stages, each a mapping with ``stage`` (its kind), optional ``name`` and ``in`` (the name
of an earlier stage or a path; default: the previous stage's output) and the stage's config::

    input: data/toy-web
    out: runs/data/toy-web
    workers: 2
    stages:
      - stage: ingest
      - stage: dedup
      - stage: filter
        min_side: 32
        detect_upscaling: true
      - stage: crop
        size: 64
      - stage: caption
        captioner: toy
      - stage: shard
        shard_size: 500

Stage ``i`` writes ``out/NN-name``; a finished stage is skipped on a re-run, a killed one resumes.
The whole file is checked before the first stage runs (:func:`plan_pipeline`), so a bad setting
in the last stage fails at once; ``edgefusion recipe`` runs the same plan as one of its stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgefusion.config import config_from_dict
from edgefusion.data.caption import CaptionConfig, caption
from edgefusion.data.crop import CropConfig, crop
from edgefusion.data.curate import CurateConfig, curate_run
from edgefusion.data.dedup import DedupConfig, dedup
from edgefusion.data.filter import FilterConfig, filter_images
from edgefusion.data.ingest import IngestConfig, ingest
from edgefusion.data.runner import RunOptions
from edgefusion.data.shard import ShardConfig, shard
from edgefusion.data.synthesize import SynthConfig, synthesize
from edgefusion.errors import EdgefusionError
from edgefusion.inputs import read_config_mapping


@dataclass(frozen=True)
class StageKind:
    """How the pipeline calls one kind of stage: its config class and its function."""

    config: type
    run: Callable[[Path | None, Path, Any, RunOptions], dict[str, Any]]


STAGES: dict[str, StageKind] = {
    "ingest": StageKind(IngestConfig, lambda src, out, cfg, opt: ingest(src, out, cfg, opt)),
    "dedup": StageKind(DedupConfig, lambda src, out, cfg, opt: dedup(src, out, cfg, opt)),
    "filter": StageKind(FilterConfig, lambda src, out, cfg, opt: filter_images(src, out, cfg, opt)),
    "crop": StageKind(CropConfig, lambda src, out, cfg, opt: crop(src, out, cfg, opt)),
    "caption": StageKind(CaptionConfig, lambda src, out, cfg, opt: caption(src, out, cfg, opt)),
    "synthesize": StageKind(SynthConfig, lambda src, out, cfg, opt: synthesize(out, cfg, opt)),
    "curate": StageKind(CurateConfig, lambda src, out, cfg, opt: curate_run(src, out, cfg, opt)),
    "shard": StageKind(ShardConfig, lambda src, out, cfg, opt: shard(src, out, cfg, opt.overwrite)),
}
_RUN_KEYS = ("workers", "engine", "chunk_size")


@dataclass(frozen=True)
class PipelineStep:
    """One checked stage of a pipeline: its kind, its input folder (None: it makes its own data),
    its config and the folder it writes."""

    kind: StageKind
    source: Path | None
    config: Any
    out: Path


def plan_pipeline(spec: dict[str, Any]) -> tuple[list[PipelineStep], RunOptions]:
    """Check a pipeline mapping whole, before any stage runs: its keys, each stage's kind, input
    and config (each stage's config class validates its settings); returns the steps in order
    and how they run (without ``overwrite``)."""
    unknown = sorted(set(spec) - {"input", "out", "stages", *_RUN_KEYS})
    if unknown:
        raise EdgefusionError(
            f"unknown pipeline key(s) {', '.join(unknown)}: use input, out, stages, workers, ..."
        )
    if "out" not in spec or not spec.get("stages"):
        raise EdgefusionError("a pipeline needs 'out' (the run folder) and a list of 'stages'")
    options = RunOptions(**{k: spec[k] for k in _RUN_KEYS if k in spec})
    run_dir = Path(spec["out"])
    outputs: dict[str, Path] = {}
    steps = []
    previous: Path | None = Path(spec["input"]) if spec.get("input") else None
    for index, entry in enumerate(spec["stages"], start=1):
        if not isinstance(entry, dict) or entry.get("stage") not in STAGES:
            raise EdgefusionError(f"pipeline stage {index} needs 'stage:' one of {', '.join(STAGES)}")
        settings = dict(entry)
        kind = STAGES[settings.pop("stage")]
        name = settings.pop("name", entry["stage"])
        source = settings.pop("in", None)
        source_path = outputs.get(source, Path(source)) if source is not None else previous
        config = config_from_dict(kind.config, settings, what=f"{entry['stage']} stage setting")
        if source_path is None and entry["stage"] != "synthesize":
            raise EdgefusionError(f"stage {index} ({name}) has no input: set 'input' or 'in'")
        steps.append(PipelineStep(kind, source_path, config, run_dir / f"{index:02d}-{name}"))
        outputs[name] = previous = steps[-1].out
    return steps, options


def run_pipeline(spec: dict[str, Any], overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Run the stages of a pipeline mapping in order, all checked first; returns their output
    folders."""
    steps, options = plan_pipeline(spec)
    options = replace(options, overwrite=overwrite, progress=progress)
    for step in steps:
        step.kind.run(step.source, step.out, step.config, options)
    return [step.out for step in steps]


def load_pipeline_file(path: str | Path) -> dict[str, Any]:
    """The pipeline mapping of a YAML file (input, out, stages, run options)."""
    return read_config_mapping(path, "pipeline file")
