"""Models built around frozen backbones (dual_stream, trimodal) and the shared low-rank multimodal Transformer."""

from avpet_core.models.dual_stream import (
    PLACEMENTS,
    STREAMS,
    DualStreamConfig,
    DualStreamError,
    DualStreamOutput,
    DualStreamViT,
    build_dual_stream,
)
from avpet_core.models.shared_lowrank import (
    PAPER_TRANSFORMER,
    FactorisedLinear,
    SharedMultimodalTransformer,
    SharedTransformerConfig,
    build_shared_transformer,
    closed_form_transformer_parameters,
    sharing_variants,
    transformer_parameter_table,
)
from avpet_core.models.trimodal import TrimodalConfig, TrimodalError, TrimodalModel, TrimodalOutput, build_trimodal

__all__ = [
    "PAPER_TRANSFORMER", "PLACEMENTS", "STREAMS", "DualStreamConfig", "DualStreamError", "DualStreamOutput",
    "DualStreamViT", "FactorisedLinear", "SharedMultimodalTransformer", "SharedTransformerConfig",
    "build_dual_stream", "build_shared_transformer", "closed_form_transformer_parameters", "sharing_variants",
    "transformer_parameter_table", "TrimodalConfig", "TrimodalError", "TrimodalModel", "TrimodalOutput", "build_trimodal",
]
