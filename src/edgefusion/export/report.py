"""How close an export's images are to the torch fp32 pipeline's, and how big it is."""

from __future__ import annotations

from pathlib import Path

from edgefusion.quant.quantize import ReportSettings, images_beside_original, psnr_db


def component_bytes(export_dir: str | Path) -> dict[str, int]:
    """Bytes on disk of each exported component (graph plus external data)."""
    root = Path(export_dir)
    return {
        name: sum(f.stat().st_size for f in (root / name).iterdir())
        for name in ("text_encoder", "unet", "vae_decoder")
    }


def export_report(
    src: str | Path,
    export_dir: str | Path,
    settings: ReportSettings | None = None,
    vae: str | Path | None = None,
) -> dict:
    """PSNR of the export's images (onnxruntime; OpenVINO in fp32 for an IR export) against torch
    fp32 images of ``src`` (same prompts and seeds), decoded by ``vae`` when the export was made
    with it."""
    from edgefusion.export.layout import is_openvino_ir
    from edgefusion.export.openvino import load_openvino_pipeline
    from edgefusion.export.runtime import load_onnx_pipeline

    settings = settings or ReportSettings()
    ir = is_openvino_ir(export_dir)
    pipe = load_openvino_pipeline(export_dir) if ir else load_onnx_pipeline(export_dir)
    reference, images, prompts, steps, guidance = images_beside_original(src, pipe, settings, vae=vae)
    return {
        "psnr_db": psnr_db(images, reference),
        "bytes": component_bytes(export_dir),
        "settings": {
            "prompts": len(prompts),
            "seed": settings.seed,
            "steps": steps,
            "guidance": guidance,
            "src": str(src),
            "export": str(export_dir),
            "runtime": "openvino" if ir else "onnxruntime",
        },
    }
