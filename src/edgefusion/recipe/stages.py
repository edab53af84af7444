"""The built-in stage kinds of a recipe: each existing stage function, run in process.

``data`` (the curation pipeline of ``edgefusion data run``), ``compress``, ``train``,
``distill``, ``lcm``, ``quantize``, ``export``, ``eval``, ``sheet`` (a contact sheet of the
same prompts and seeds through several models) and ``bench`` (their latency per component).
Training and data stages keep their own resume: the recipe only places their outputs (``out``,
``run_dir``) in the stage's folder and runs them again. The stage functions and their configs
are imported when a stage is built, so importing a recipe loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgefusion.config import config_from_dict, config_to_dict
from edgefusion.errors import EdgefusionError
from edgefusion.recipe.kinds import StageKind, register_stage_kind
from edgefusion.recipe.latency import BenchStageConfig, run_bench
from edgefusion.recipe.sheet import SheetConfig, make_sheet

#: Where every kind puts its output inside the stage's folder.
OUTPUT = "out"


def _placed_output(folder: Path) -> dict[str, Any]:
    return {"out": str(folder / OUTPUT)}


def _training_kind(name: str, help: str, module: str, config: str, function: str, inputs: tuple[str, ...]):
    """A training stage: its config class validates, it resumes from its run folder's newest
    checkpoint, and a re-run may rewrite the output a killed run finished writing."""
    import importlib

    def build(settings: dict[str, Any], folder: Path) -> Any:
        cls = getattr(importlib.import_module(module), config)
        placed = {**_placed_output(folder), "run_dir": str(folder / "run"), "overwrite": True}
        return config_from_dict(cls, {**settings, **placed}, what=f"{name} setting")

    def run(cfg: Any) -> Any:
        return getattr(importlib.import_module(module), function)(cfg)

    return StageKind(
        name=name,
        help=help,
        build=build,
        run=run,
        output=lambda cfg: Path(cfg.out),
        inputs=inputs,
        placed=("out", "run_dir", "overwrite"),
        resumes=True,
    )


@dataclass(frozen=True)
class DataRun:
    """A checked curation pipeline (:func:`edgefusion.data.pipeline.plan_pipeline`)."""

    steps: list[Any]
    options: Any


def _build_data(settings: dict[str, Any], folder: Path) -> DataRun:
    from edgefusion.data.pipeline import plan_pipeline

    steps, options = plan_pipeline({**settings, "out": str(folder)})
    return DataRun(steps, options)


def _run_data(run: DataRun) -> None:
    for step in run.steps:
        step.kind.run(step.source, step.out, step.config, run.options)


def _describe_data(run: DataRun) -> dict[str, Any]:
    return {
        "options": {"engine": run.options.engine, "chunk_size": run.options.chunk_size},
        "stages": [
            {"out": step.out.name, "input": str(step.source), "config": config_to_dict(step.config)}
            for step in run.steps
        ],
    }


@dataclass(frozen=True)
class CompressConfig:
    """``edgefusion compress`` in a recipe: BK-SDM block removal of ``model``."""

    model: str = ""
    variant: Literal["base", "small", "tiny"] = "tiny"
    seed: int = 0
    unet_config: str | None = None
    out: str = ""

    def __post_init__(self) -> None:
        if not self.model:
            raise EdgefusionError("set model (the teacher pipeline, U-Net folder or built-in name)")


def _run_compress(cfg: CompressConfig) -> None:
    from edgefusion.arch.compression import compress_path

    compress_path(cfg.model, cfg.variant, cfg.out, overwrite=True, seed=cfg.seed, unet_config=cfg.unet_config)


@dataclass(frozen=True)
class QuantizeConfig:
    """``edgefusion quantize`` in a recipe: W8A16 U-Net, fp16 encoder and decoder; ``calibrate``
    records activation ranges over that many of ``prompts`` (a file or a prompt set; default:
    the registered evaluator's prompts)."""

    model: str = ""
    activation_dtype: Literal["float16", "bfloat16"] = "float16"
    keep_16bit: list[str] = field(default_factory=lambda: ["conv_out"])
    calibrate: int = 0
    prompts: str | None = None
    steps: int | None = None
    guidance: float | None = None
    out: str = ""

    def __post_init__(self) -> None:
        if not self.model:
            raise EdgefusionError("set model (the pipeline folder to quantize)")
        if self.calibrate < 0:
            raise EdgefusionError("calibrate must be 0 (off) or a number of prompts")


def _run_quantize(cfg: QuantizeConfig) -> None:
    from edgefusion.quant.quantize import ReportSettings, quantize_pipeline
    from edgefusion.quant.w8a16 import W8A16Config

    calibration = None
    if cfg.calibrate:
        prompts = Path(cfg.prompts) if cfg.prompts else None
        settings = ReportSettings(
            num_prompts=cfg.calibrate, steps=cfg.steps, guidance=cfg.guidance, prompts_file=prompts
        )
        calibration = settings.prompts()
    quantize_pipeline(
        cfg.model,
        cfg.out,
        W8A16Config(activation_dtype=cfg.activation_dtype, skip=tuple(cfg.keep_16bit)),
        overwrite=True,
        calibration_prompts=calibration,
        calibration_steps=cfg.steps,
        calibration_guidance=cfg.guidance,
    )


@dataclass(frozen=True)
class ExportConfig:
    """``edgefusion export`` in a recipe: ONNX graphs of ``model`` traced at ``size`` pixels."""

    model: str = ""
    precision: Literal["fp32", "fp16", "w8a16"] = "fp32"
    size: int | None = None
    vae: str | None = None
    out: str = ""

    def __post_init__(self) -> None:
        if not self.model:
            raise EdgefusionError("set model (the pipeline folder to export)")


def _run_export(cfg: ExportConfig) -> None:
    from edgefusion.export.onnx import export_pipeline

    export_pipeline(cfg.model, cfg.out, cfg.precision, cfg.size, cfg.size, overwrite=True, vae=cfg.vae)


def _simple_kind(
    name: str, help: str, config: type, run: Any, inputs: tuple[str, ...], resumes: bool = False
):
    """A stage that writes one output folder from a config dataclass of its options."""

    def build(settings: dict[str, Any], folder: Path) -> Any:
        return config_from_dict(config, {**settings, **_placed_output(folder)}, what=f"{name} setting")

    return StageKind(
        name=name,
        help=help,
        build=build,
        run=run,
        output=lambda cfg: Path(cfg.out),
        inputs=inputs,
        placed=("out",),
        resumes=resumes,
    )


def _build_eval(settings: dict[str, Any], folder: Path) -> Any:
    from edgefusion.eval.prompts import prompt_file
    from edgefusion.eval.protocol import EvalConfig

    config = config_from_dict(EvalConfig, {**settings, **_placed_output(folder)}, what="eval setting")
    if (config.model is None) == (config.images is None):
        raise EdgefusionError("set model (generate, then score) or images (score a folder), not both")
    if not prompt_file(config.prompts).is_file():
        raise EdgefusionError(f"prompts {config.prompts} is neither a prompt file nor a prompt set")
    return config


def _run_eval(config: Any) -> None:
    from edgefusion.eval.protocol import evaluate

    evaluate(config)


DATA = StageKind(
    name="data",
    help="the curation pipeline of `edgefusion data run` (input, stages, workers, ...)",
    build=_build_data,
    run=_run_data,
    output=lambda run: run.steps[-1].out,
    inputs=("input",),
    placed=("out",),
    resumes=True,
    describe=_describe_data,
)
EVAL = StageKind(
    name="eval",
    help="`edgefusion eval --out`: generate (resumable), score, metrics.json",
    build=_build_eval,
    run=_run_eval,
    output=lambda cfg: Path(cfg.out),
    inputs=("model", "images", "vae", "inception_weights", "fid_reference", "clip"),
    placed=("out",),
    resumes=True,
)
BUILTIN_KINDS = (
    DATA,
    _simple_kind(
        "compress", "BK-SDM block removal (model, variant)", CompressConfig, _run_compress, ("model",)
    ),
    _training_kind(
        "train",
        "`edgefusion train` (SD's objective)",
        "edgefusion.train.denoise",
        "DenoiseConfig",
        "train_unet",
        ("pipeline", "unet", "text_encoder", "data.path"),
    ),
    _training_kind(
        "distill",
        "BK-SDM knowledge distillation (`edgefusion distill`)",
        "edgefusion.train.kd",
        "KDConfig",
        "distill",
        ("teacher", "student", "student_from", "pipeline", "data.path"),
    ),
    _training_kind(
        "lcm",
        "latent consistency distillation (`edgefusion lcm`)",
        "edgefusion.train.lcm",
        "LCMConfig",
        "lcm_distill",
        ("student", "teacher", "pipeline", "data.path"),
    ),
    _simple_kind(
        "quantize", "W8A16 quantization (`edgefusion quantize`)", QuantizeConfig, _run_quantize, ("model",)
    ),
    _simple_kind("export", "ONNX export (`edgefusion export`)", ExportConfig, _run_export, ("model", "vae")),
    EVAL,
    _simple_kind(
        "sheet",
        "a contact sheet: the same prompts and seeds through each model",
        SheetConfig,
        make_sheet,
        ("models",),
        resumes=True,
    ),
    _simple_kind(
        "bench",
        "`edgefusion bench`: latency per component of each model (label: model)",
        BenchStageConfig,
        run_bench,
        ("models",),
    ),
)


def register_builtin_kinds() -> None:
    """Register every built-in kind (called once, when the package is imported)."""
    for kind in BUILTIN_KINDS:
        register_stage_kind(kind)
