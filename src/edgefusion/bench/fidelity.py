"""How close each bench backend's images are to torch fp32's, on the same prompts and seeds.

A faster backend replaces the fp32 one only if it draws the same images: each backend samples the
model through the pipeline ``generate`` would load (:func:`~edgefusion.bench.backends.load_backend_pipeline`),
and its images are compared with torch fp32's by PSNR over all pixels. The backend a CPU user gets
by default must stay at or above :data:`PSNR_FLOOR_DB`.
"""

from __future__ import annotations

from pathlib import Path

from edgefusion.bench.backends import check_backend, load_backend_pipeline
from edgefusion.bench.onnx import exported_folder
from edgefusion.pipeline.sampling import generate_tensors, sampling_defaults
from edgefusion.pipeline.sources import resolve_model_path
from edgefusion.quant.quantize import ReportSettings, psnr_db

#: The PSNR (dB) against torch fp32 images below which a backend does not draw the same images.
PSNR_FLOOR_DB = 30.0


def backend_psnr(
    model: str, backends: list[str], work_dir: Path, settings: ReportSettings | None = None
) -> list[dict]:
    """One record per backend: ``psnr_db`` of its images against torch fp32's and whether it
    reaches :data:`PSNR_FLOOR_DB`, at the settings' or the model kind's steps and guidance.
    onnxruntime runs an fp32 export of ``model``, made under ``work_dir`` on first use; openvino
    keeps its exports there too."""
    for backend in backends:
        check_backend(backend)
    settings = settings or ReportSettings()
    folder = resolve_model_path(model)
    prompts = settings.prompts()
    seeds = [settings.seed + i for i in range(len(prompts))]
    reference_pipe = load_backend_pipeline("torch-fp32", folder, work_dir)
    steps, guidance = sampling_defaults(reference_pipe, model, settings.steps, settings.guidance)
    run = dict(steps=steps, guidance=guidance, batch_size=settings.batch_size)
    reference = generate_tensors(reference_pipe, prompts, seeds, **run)
    del reference_pipe
    records = []
    for backend in backends:
        export = exported_folder(model, None, work_dir) if backend == "onnxruntime" else None
        pipe = load_backend_pipeline(backend, folder, work_dir, export=export)
        psnr = psnr_db(generate_tensors(pipe, prompts, seeds, **run), reference)
        records.append(
            {
                "model": model,
                "backend": backend,
                "psnr_db": psnr,
                "reaches_floor": psnr >= PSNR_FLOOR_DB,
                "floor_db": PSNR_FLOOR_DB,
                "prompts": len(prompts),
                "seed": settings.seed,
                "steps": steps,
                "guidance": guidance,
            }
        )
    return records
