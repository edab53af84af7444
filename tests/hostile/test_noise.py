"""An ordinary run prints no library notices: the ones we caused (diffusers' float32 cast
warning, from rebuilding an LCM pipeline with ``from_pipe``) are gone at the cause, and the one we
did not (transformers' torchvision fallback notice, raised by diffusers' imports) is filtered by
its exact message, at CLI start-up, and nothing else is."""

from __future__ import annotations

import logging

import torch

from edgefusion.cli import quiet_library_notices

TORCHVISION_NOTICE = (
    "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` for "
    "backward compatibility. Install torchvision to use the default backend, or import "
    "`CLIPImageProcessorPil` directly to silence this warning."
)


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_only_the_torchvision_fallback_notice_is_filtered():
    logger = logging.getLogger("transformers.utils.import_utils")
    recorder = Recorder()
    logger.addHandler(recorder)
    try:
        quiet_library_notices()
        logger.warning(TORCHVISION_NOTICE)
        logger.warning(TORCHVISION_NOTICE.replace("CLIPImageProcessor", "SiglipImageProcessor"))
        logger.warning("`CLIPImageProcessor` failed to load: a real problem")
    finally:
        logger.removeHandler(recorder)
    assert recorder.messages == ["`CLIPImageProcessor` failed to load: a real problem"]


def test_an_lcm_pipeline_loads_without_casting(lcm_pipeline, tmp_path):
    """The LCM pipeline is built from the loaded components: no cast warning, and a W8A16 LCM
    keeps computing in its 16-bit dtype (``from_pipe`` cast it to float32)."""
    from edgefusion.pipeline.load import load_pipeline
    from edgefusion.quant.quantize import quantize_pipeline

    logger = logging.getLogger("diffusers.models.modeling_utils")
    recorder = Recorder()
    logger.addHandler(recorder)
    try:
        pipe = load_pipeline(lcm_pipeline)
        quantized = load_pipeline(quantize_pipeline(lcm_pipeline, tmp_path / "w8a16"))
    finally:
        logger.removeHandler(recorder)
    assert type(pipe).__name__ == type(quantized).__name__ == "LatentConsistencyModelPipeline"
    assert not [m for m in recorder.messages if "kept in float32" in m], recorder.messages
    assert pipe.unet.dtype == torch.float32 and quantized.unet.dtype == torch.float16
