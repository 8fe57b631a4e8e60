"""Models built around frozen backbones (dual_stream, trimodal; their base :mod:`.base`) and the shared
low-rank multimodal Transformer."""

from avpet_core.models.base import PLACEMENTS, STREAMS, FrozenEncodersModel, TrainableModel
from avpet_core.models.dual_stream import (
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
    "PAPER_TRANSFORMER",
    "PLACEMENTS",
    "STREAMS",
    "DualStreamConfig",
    "DualStreamError",
    "DualStreamOutput",
    "DualStreamViT",
    "FactorisedLinear",
    "FrozenEncodersModel",
    "SharedMultimodalTransformer",
    "SharedTransformerConfig",
    "TrainableModel",
    "build_dual_stream",
    "build_shared_transformer",
    "closed_form_transformer_parameters",
    "sharing_variants",
    "transformer_parameter_table",
    "TrimodalConfig",
    "TrimodalError",
    "TrimodalModel",
    "TrimodalOutput",
    "build_trimodal",
]
