"""The backends ``edgefusion bench`` compares, and how each loads the pipeline ``generate`` runs.

A bench backend is a loader of the inference layer (``torch``, ``torch-compile``,
``onnxruntime``, ``openvino``; :mod:`edgefusion.pipeline.registry`) at one compute type. The
end-to-end times and the image comparisons load pipelines here, so they run what ``edgefusion
generate --backend ...`` runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgefusion.errors import EdgefusionError
from edgefusion.pipeline.cpu_backend import split_backend

#: Bench backend -> (backend of the inference layer, compute type): the names ``generate`` takes.
BACKENDS: dict[str, tuple[str, torch.dtype]] = {
    name: split_backend(name)
    for name in (
        *("torch-fp32", "torch-bf16", "torch-compile", "torch-compile-bf16"),
        *("onnxruntime", "openvino", "openvino-bf16"),
    )
}
#: Graph runtimes time exports of the fp32 weights, and the compiled torch ones trace fp32
#: modules, so they run before ``torch-bf16`` casts the weights in place.
RUN_ORDER = ("onnxruntime", "openvino", "openvino-bf16", "torch-fp32", "torch-compile", "torch-compile-bf16")
RUN_ORDER += tuple(b for b in BACKENDS if b not in RUN_ORDER)


def check_backend(backend: str) -> None:
    """A clear error for an unknown backend or one whose runtime is not installed."""
    if backend not in BACKENDS:
        raise EdgefusionError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise EdgefusionError(
                "backend onnxruntime is not installed: `pip install onnx onnxruntime`, "
                "or use torch-fp32 / torch-bf16"
            ) from None
    if BACKENDS[backend][0] == "openvino":
        from edgefusion.export.openvino import require_openvino

        require_openvino()


def load_backend_pipeline(
    backend: str, folder: Path, work_dir: Path, vae: Path | None = None, export: Path | None = None
):
    """The pipeline ``generate --backend`` runs for pipeline ``folder`` (decoding with ``vae``).

    onnxruntime runs an export, which ``export`` names (made beforehand, as a user does with
    ``edgefusion export``); openvino exports ``folder`` itself on first use, into
    ``work_dir / "openvino"``; torch backends swap ``vae`` in after loading, as ``generate --vae``
    does, and ``torch-compile`` compiles the swapped-in decoder too. The graph runtimes use as
    many threads as torch.
    """
    from edgefusion.pipeline.load import load_pipeline

    name, dtype = BACKENDS[backend]
    if name == "onnxruntime":
        from edgefusion.export.runtime import load_onnx_pipeline

        return load_onnx_pipeline(export, torch.get_num_threads())
    if name == "openvino":
        from edgefusion.export.openvino import load_openvino_pipeline

        return load_openvino_pipeline(folder, dtype, torch.get_num_threads(), vae, work_dir / "openvino")
    pipe = load_pipeline(folder, name, dtype=dtype)
    if vae is not None:
        from edgefusion.pipeline.load import cpu_compiled
        from edgefusion.pipeline.vae import load_decoder, swap_decoder

        swap_decoder(pipe, load_decoder(vae))
        if name == "torch-compile":
            decoder = pipe.vae.decoder
            decoder.forward = cpu_compiled(decoder.forward, dtype)
    return pipe
