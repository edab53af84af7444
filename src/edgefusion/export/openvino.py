"""Generate with OpenVINO's CPU runtime: the ``openvino`` backend.

It loads an ONNX or OpenVINO IR export (``edgefusion export``, :mod:`~edgefusion.export.openvino_ir`)
as it is, or a diffusers pipeline folder (or
``toy:NAME``), which it first exports with :func:`~edgefusion.export.onnx.export_pipeline` (fp32)
into a cache folder keyed by the source: its resolved path and the size and modification time of
each of its files, so a changed model is exported again and an unchanged one is not. OpenVINO reads
the ONNX graphs directly, and its own compiled-model cache (``CACHE_DIR``, one per export) makes a
second load skip compilation too. Going through the exporter, rather than ``openvino.convert_model``
on the torch modules, reuses its checks and options (tiled U-Nets, ``--vae`` decoders, W8A16 as
int8 QDQ) and its tested graphs.

Sampling is the onnxruntime pipeline's loop
(:class:`~edgefusion.export.runtime.OnnxStableDiffusionPipeline`) with compiled OpenVINO models as
its sessions, so with the same seeds an fp32 run reproduces the torch images to float rounding.

``dtype`` sets OpenVINO's inference precision (the graphs stay fp32): float32 asks for ``f32``
explicitly, because on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise pick bf16 by itself;
bfloat16 asks for ``bf16``, which a CPU without those instructions runs as ``f32``.

The cache lives in ``$EDGEFUSION_CACHE/openvino`` (default ``~/.cache/edgefusion/openvino``);
stale entries are never read again and may be deleted at any time.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from edgefusion.errors import EdgefusionError
from edgefusion.export.layout import EXPORT_INFO, IR_FILE
from edgefusion.export.runtime import OnnxStableDiffusionPipeline
from edgefusion.inputs import check_model_folder

INSTALL_HINT = "pip install 'edgefusion[openvino]'"
#: OpenVINO's inference precision for each torch compute type this backend takes.
PRECISION_HINTS = {torch.float32: "f32", torch.bfloat16: "bf16"}


def require_openvino():
    """The ``openvino`` module, or an error naming the extra that installs it."""
    try:
        import openvino
    except ImportError:
        raise EdgefusionError(
            f"the openvino backend needs OpenVINO, which is not installed: {INSTALL_HINT}"
        ) from None
    return openvino


def cache_root() -> Path:
    """Where exports made for this backend and OpenVINO's compiled models are kept."""
    base = os.environ.get("EDGEFUSION_CACHE") or Path.home() / ".cache" / "edgefusion"
    return Path(base) / "openvino"


def source_key(folder: Path, vae: str | Path | None = None) -> str:
    """A name for the export of ``folder`` (and decoder ``vae``) that changes whenever one of
    their files does: the resolved paths, and each file's relative name, size and mtime."""
    digest = hashlib.sha256()
    for root in (Path(folder), *([Path(vae)] if vae is not None else [])):
        root = root.resolve()
        digest.update(str(root).encode())
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(folder).resolve().name)[:40]
    return f"{slug}-{digest.hexdigest()[:16]}"


def exported_for_openvino(path: Path, vae: str | Path | None = None, cache: Path | None = None) -> Path:
    """``path`` itself if it is an ONNX export; else its fp32 export (with decoder ``vae``) in the
    cache, made on first use."""
    from edgefusion.export.onnx import export_pipeline
    from edgefusion.pipeline.vae import decoder_folder

    if (path / EXPORT_INFO).is_file():
        if vae is not None:
            raise EdgefusionError(f"{path} is an ONNX export: its decoder was chosen at export time")
        return path
    check_model_folder(path)  # a corrupt file is the same one-line error as in the torch backend
    decoder = decoder_folder(vae) if vae is not None else None
    out = (cache or cache_root()) / source_key(path, decoder)
    if not (out / EXPORT_INFO).is_file():
        export_pipeline(path, out, precision="fp32", vae=decoder)
    return out


class OpenVinoSession:
    """One OpenVINO graph, called like :class:`~edgefusion.export.runtime.OrtSession`: named torch
    tensors in (cast to the types the graph declares), its first output out as fp32 torch.

    The graph (ONNX or OpenVINO IR ``file``) is compiled for the CPU at the precision of ``dtype``,
    tuned for the latency of one call, with ``threads`` threads (None: OpenVINO's default),
    compiled models kept in ``cache_dir``, ``properties`` added to the CPU plugin's settings
    (``PERF_COUNT``). It is compiled on the first call for that call's input shapes and again when
    they change: static shapes let the CPU plugin pick kernels and memory layouts per layer, which
    made the 512 px EdgeFusion-Tiny U-Net call 4-8% faster in bf16 and 12-16% faster with int8
    activations than one compile for any shape (2 cores, AVX512-BF16). ``compiled`` and
    ``request`` are the current ones.
    """

    def __init__(
        self,
        file: Path,
        dtype: torch.dtype = torch.float32,
        threads: int | None = None,
        cache_dir: Path | None = None,
        properties: dict | None = None,
    ):
        openvino = require_openvino()
        if dtype not in PRECISION_HINTS:
            raise EdgefusionError(f"the openvino backend computes in float32 or bfloat16, not {dtype}")
        self.plugin_config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[dtype],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            self.plugin_config["INFERENCE_NUM_THREADS"] = threads
        self.plugin_config |= properties or {}
        self.core = openvino.Core()
        if cache_dir is not None:
            self.core.set_property({"CACHE_DIR": str(cache_dir)})
        self.model = self.core.read_model(str(file))
        # An input may carry several tensor names (the ONNX name among them): accept each.
        self.input_types = {
            name: port.get_element_type().to_dtype() for port in self.model.inputs for name in port.names
        }
        self.shapes: dict[str, tuple[int, ...]] | None = None
        self.compiled = self.request = None

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {
            name: value.numpy().astype(self.input_types[name], copy=False) for name, value in inputs.items()
        }
        shapes = {name: value.shape for name, value in feed.items()}
        if shapes != self.shapes:
            self._compile_for(shapes)
        result = self.request.infer(feed)[self.compiled.output(0)]
        return torch.from_numpy(np.array(result, dtype=np.float32))  # a copy: the next call reuses the buffer

    def _compile_for(self, shapes: dict[str, tuple[int, ...]]) -> None:
        model = self.model.clone()
        model.reshape({name: list(shape) for name, shape in shapes.items()})
        self.compiled = self.request = None  # the previous shapes' weights go before the new ones come
        self.compiled = self.core.compile_model(model, "CPU", self.plugin_config)
        self.request = self.compiled.create_infer_request()
        self.shapes = shapes


def load_openvino_pipeline(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    vae: str | Path | None = None,
    cache: Path | None = None,
) -> OnnxStableDiffusionPipeline:
    """The OpenVINO pipeline of ``path`` (an ONNX export or a pipeline folder, exported on first
    use, decoding with ``vae`` when given), computing at the precision of ``dtype``."""
    require_openvino()
    folder = exported_for_openvino(Path(path), vae, cache)
    compiled = (cache or cache_root()) / "compiled" / source_key(folder)

    def session(component: Path) -> OpenVinoSession:
        graph = component / IR_FILE if (component / IR_FILE).is_file() else component / "model.onnx"
        return OpenVinoSession(graph, dtype, threads, compiled)

    return OnnxStableDiffusionPipeline(folder, threads, session=session)


def load_openvino_backend(
    path: Path,
    dtype: torch.dtype = torch.float32,
    scheduler: str | None = None,
    vae: str | Path | None = None,
):
    """The ``openvino`` backend's loader; the sampler is the one saved with the model, the decoder
    ``vae`` when given (exported with the model: a compiled graph's decoder cannot be swapped)."""
    if scheduler is not None:
        raise EdgefusionError("the openvino backend samples with the scheduler saved with the model")
    return load_openvino_pipeline(path, dtype, vae=vae)
