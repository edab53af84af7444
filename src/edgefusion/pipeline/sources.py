"""What a model spec names, for every command: a built-in architecture (``sd-v1.4``), a registered
name (``toy:teacher``), a config folder, a U-Net folder, a diffusers pipeline folder, or a
single-file SD checkpoint in the original (LDM) layout.

Every tool that takes a model resolves it here, so they all accept the same inputs and fail with
the same clear messages. Names with a prefix come from the model sources that plug-ins register
(:mod:`edgefusion.pipeline.registry`); this layer knows none of them itself. Nothing is
downloaded: the single-file path converts with diffusers' own single-file converter against a
local U-Net config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgefusion.errors import EdgefusionError
from edgefusion.inputs import check_safetensors, first_line, open_safetensors, read_json_file
from edgefusion.pipeline.configs import BUILTIN_COMPONENTS, BUILTIN_MODELS, builtin_config, builtin_family
from edgefusion.pipeline.registry import model_source, name_examples

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

SourceKind = Literal["builtin", "config", "unet", "pipeline", "single_file"]

_UNET_WEIGHTS_GLOBS = ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")
# An original-layout checkpoint's first cross-attention key projection: its input width is the
# text encoder's (768 for SD-v1.x, 1024 for SD-v2.x), which tells the two families apart.
_LDM_CROSS_ATTENTION_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_LDM_FAMILY_BY_CONTEXT_WIDTH = {768: "sd-v1", 1024: "sd-v2-base"}
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
# What a registered name looks like (``toy:teacher``): a lower-case word and a colon.
_NAME_PREFIX = re.compile(r"[a-z][a-z0-9_-]*:(?![/\\])")


def resolve_model_path(spec: str | Path) -> Path:
    """The folder (or file) ``spec`` names: a registered name (``toy:NAME``) resolved by its model
    source, anything else an existing path."""
    text = str(spec)
    source = model_source(text)
    if source is not None:
        return source.resolve(text[len(source.prefix) :])
    path = Path(text).expanduser()
    if not path.exists():
        prefix = _NAME_PREFIX.match(text)
        if prefix:  # a name whose source is not registered: say where such names come from
            known = f" (known: {', '.join(name_examples())})" if name_examples() else ""
            raise EdgefusionError(
                f"model folder {path} not found, and no model source is registered for "
                f"{prefix.group(0)!r} names{known}: the package that provides them registers it when "
                "imported (the command line imports them all)"
            )
        raise EdgefusionError(
            f"model folder {path} not found; pass a diffusers folder{_or_names(' or a name like ')}"
        )
    return path


def _or_names(joiner: str) -> str:
    """``joiner`` and the registered example names (``toy:teacher``), or nothing when none is."""
    examples = name_examples()
    return joiner + ", ".join(examples) if examples else ""


@dataclass(frozen=True)
class Source:
    """A resolved model source: what it is, where it is, and the configs of its components.

    ``configs`` always holds ``unet``; ``text_encoder`` and ``vae`` where the source defines them.
    ``has_weights`` is False for architecture-only sources (built-in names, bare configs).
    """

    kind: SourceKind
    location: str
    configs: dict[str, dict[str, Any]] = field(repr=False)
    has_weights: bool

    @property
    def unet_config(self) -> dict[str, Any]:
        return self.configs["unet"]

    @property
    def path(self) -> Path:
        return Path(self.location)


def resolve_source(src: str | Path, unet_config: str | Path | None = None) -> Source:
    """Identify ``src`` and read its configs, without loading any weights.

    ``unet_config`` (a built-in name or config folder) is only for single-file checkpoints whose
    family cannot be recognized from their tensor shapes.
    """
    name = str(src)
    if name in BUILTIN_MODELS:
        family = builtin_family(name)
        configs = {component: builtin_config(family, component) for component in BUILTIN_COMPONENTS}
        return Source("builtin", name, configs, has_weights=False)
    path = resolve_model_path(name) if model_source(name) is not None else Path(src)
    if not path.exists():
        raise EdgefusionError(
            f"{path} does not exist: give a built-in model ({', '.join(BUILTIN_MODELS)}), a diffusers "
            f"pipeline or U-Net folder{_or_names(', ')}, a config folder, or a .safetensors checkpoint"
        )
    if path.is_file():
        return _resolve_single_file(path, unet_config)
    if (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file():
        configs = {
            component: read_json_file(path / component / "config.json")
            for component in BUILTIN_COMPONENTS
            if (path / component / "config.json").is_file()
        }
        if "unet" not in configs:
            raise EdgefusionError(f"pipeline folder {path} has no unet/config.json: it holds no U-Net")
        check_unet_config(configs["unet"], str(path / "unet"))
        return Source("pipeline", str(path), configs, has_weights=_has_unet_weights(path / "unet"))
    if (path / "config.json").is_file():
        has_weights = _has_unet_weights(path)
        kind: SourceKind = "unet" if has_weights else "config"
        config = check_unet_config(read_json_file(path / "config.json"), str(path))
        return Source(kind, str(path), {"unet": config}, has_weights)
    raise EdgefusionError(
        f"{path} holds neither config.json nor model_index.json: point at a diffusers U-Net, "
        "pipeline or config folder"
    )


def check_unet_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Return ``config`` if it describes a diffusers UNet2DConditionModel, else raise."""
    class_name = config.get("_class_name", "UNet2DConditionModel")
    if class_name != "UNet2DConditionModel" or "down_block_types" not in config:
        raise EdgefusionError(
            f"{where} does not describe a UNet2DConditionModel (found {class_name}): point at a "
            "Stable Diffusion U-Net or pipeline"
        )
    return config


def load_unet_config(name_or_path: str | Path) -> dict[str, Any]:
    """The U-Net config of a built-in model, a U-Net/config folder, a pipeline folder or a
    single-file checkpoint (whose family is recognized from its shapes)."""
    return resolve_source(name_or_path).unet_config


def load_teacher_unet(source: Source) -> UNet2DConditionModel | None:
    """Load the source's U-Net with its weights, or return None for architecture-only sources."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors import SafetensorError

    if not source.has_weights:
        return None
    if source.kind == "single_file":
        return _load_single_file_unet(source.path, source.unet_config)
    unet_dir = source.path / "unet" if source.kind == "pipeline" else source.path
    stored_dtypes = {_stored_dtype(weights) for weights in sorted(unet_dir.glob("*.safetensors"))}
    # from_pretrained would upcast half-precision weights to float32: keep what was stored.
    stored = stored_dtypes.pop() if len(stored_dtypes) == 1 else None
    dtype = getattr(torch, _SAFETENSORS_DTYPES[stored]) if stored else None
    try:
        return UNet2DConditionModel.from_pretrained(unet_dir, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise EdgefusionError(
            f"could not load the U-Net in {unet_dir}: {first_line(err)}; check that its config.json "
            "matches its weights"
        ) from err


def _resolve_single_file(path: Path, unet_config: str | Path | None) -> Source:
    if path.suffix != ".safetensors":
        raise EdgefusionError(
            f"{path} is not a .safetensors file: single-file checkpoints must be safetensors "
            "(pickled .ckpt files can run code; convert them first)"
        )
    if unet_config is not None:
        configs = {"unet": load_unet_config(unet_config)}
        return Source("single_file", str(path), configs, has_weights=True)
    family = _ldm_family(path)
    configs = {component: builtin_config(family, component) for component in BUILTIN_COMPONENTS}
    return Source("single_file", str(path), configs, has_weights=True)


def _ldm_family(path: Path) -> str:
    """Recognize SD-v1.x or SD-v2.x from the header of an original-layout checkpoint."""
    with open_safetensors(path) as handle:
        if _LDM_CROSS_ATTENTION_KEY not in handle.keys():
            raise EdgefusionError(
                f"{path} is not a Stable Diffusion checkpoint in the original layout (no "
                f"{_LDM_CROSS_ATTENTION_KEY}); diffusers folders must be given as folders"
            )
        context_width = handle.get_slice(_LDM_CROSS_ATTENTION_KEY).get_shape()[1]
    if context_width not in _LDM_FAMILY_BY_CONTEXT_WIDTH:
        raise EdgefusionError(
            f"{path} has cross-attention width {context_width}, not SD-v1.x (768) or SD-v2.x (1024); "
            "pass its U-Net config with --unet-config"
        )
    return _LDM_FAMILY_BY_CONTEXT_WIDTH[context_width]


def _load_single_file_unet(path: Path, config: dict[str, Any]) -> UNet2DConditionModel:
    """Convert an original-layout checkpoint's U-Net with diffusers' single-file converter."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    check_safetensors(path)
    checkpoint = load_file(path)
    state = convert_ldm_unet_checkpoint(checkpoint, config)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise EdgefusionError(
            f"the U-Net in {path} does not match its config ({first_line(err)}); pass the right config"
        ) from err
    return unet


def _stored_dtype(path: Path) -> str | None:
    """The safetensors dtype name (F32, F16, BF16) of a file's first tensor; fails early, naming the
    file, when the file is truncated or corrupt."""
    with open_safetensors(path) as handle:
        keys = list(handle.keys())
        dtype = handle.get_slice(keys[0]).get_dtype() if keys else None
        return dtype if dtype in _SAFETENSORS_DTYPES else None


def _has_unet_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in _UNET_WEIGHTS_GLOBS)
