"""Model-level tiling (MLT) of attention, as EdgeFusion deploys it: a planner sized to the NPU's
SRAM with a DRAM-traffic model (:mod:`~edgefusion.tiling.planner`), a query-tiled attention
processor (:mod:`~edgefusion.tiling.processor`) and per-layer plans (:mod:`~edgefusion.tiling.layers`)."""

from edgefusion.tiling.layers import plan_unet, tile_attention_
from edgefusion.tiling.planner import AttentionShape, plan_tiles
from edgefusion.tiling.processor import TiledAttnProcessor

__all__ = ["AttentionShape", "TiledAttnProcessor", "plan_tiles", "plan_unet", "tile_attention_"]
