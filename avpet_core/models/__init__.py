"""Models built around frozen backbones."""

from avpet_core.models.dual_stream import (
    PLACEMENTS,
    STREAMS,
    DualStreamConfig,
    DualStreamError,
    DualStreamOutput,
    DualStreamViT,
    build_dual_stream,
)

__all__ = [
    "PLACEMENTS", "STREAMS", "DualStreamConfig", "DualStreamError", "DualStreamOutput", "DualStreamViT",
    "build_dual_stream",
]
