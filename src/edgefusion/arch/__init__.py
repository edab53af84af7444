"""Architecture tools: BK-SDM block removal (``compress``) and parameter/MAC counts (``info``).

One :class:`RemovalPlan`, derived from the block structure of any SD-layout U-Net config, builds
the student, maps each student tensor to the teacher tensor that initializes it, and pairs layers
for feature distillation. Built-in SD-v1.x / SD-v2.x-base configs make all of it work offline.

Names are imported on first use, so ``edgefusion --help`` does not pay for torch and diffusers.
Models come in through the inference layer's resolver (:mod:`edgefusion.pipeline.sources`), which
also names the built-in architectures (:mod:`edgefusion.pipeline.configs`).
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "VARIANTS": "removal",
    "FeaturePair": "removal",
    "RemovalPlan": "removal",
    "plan_removal": "removal",
    "ComponentCount": "counting",
    "ModelCount": "counting",
    "count_model": "counting",
    "count_unet_parameters": "counting",
    "CompressionReport": "compression",
    "compress": "compression",
    "compress_path": "compression",
    "init_student_from_teacher": "compression",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
