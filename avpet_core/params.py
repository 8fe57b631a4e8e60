"""Parameter accounting in the papers' convention.

The papers report three numbers per model: the parameters the method *adds* (adapters), the
parameters that are *trained* (adapters plus task head), and the *frozen* backbone. Here they are
counted from the modules themselves, never typed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from avpet_core.adapters import StageAdapterConfig, SublayerAdapterConfig
from avpet_core.models.base import PLACEMENTS
from avpet_core.models.dual_stream import build_dual_stream
from avpet_core.models.trimodal import build_trimodal


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model (numbers of scalars, not bytes)."""

    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a fraction of all parameters."""
        return self.trainable / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "trainable_share": self.trainable_share}


def count_parameters(module: nn.Module) -> ParamCounts:
    """Count trainable (``requires_grad``) and frozen parameters, each shared tensor once."""
    trainable = frozen = 0
    for parameter in module.parameters():  # .parameters() already de-duplicates shared tensors
        if parameter.requires_grad:
            trainable += parameter.numel()
        else:
            frozen += parameter.numel()
    return ParamCounts(trainable=trainable, frozen=frozen)


def millions(count: int, digits: int = 2) -> str:
    """``3_843_072 -> '3.84M'``."""
    return f"{count / 1e6:.{digits}f}M"


# -- the papers' convention for adapted models --------------------------------------------------


@dataclass(frozen=True)
class AdaptedCounts(ParamCounts):
    """Counts of an adapted model as AV-PEA's Tables 1-2 give them.

    Attributes:
        trainable: everything that trains — the model's trained part plus task head (the "Total"
            trainable column).
        frozen: the frozen backbone (the tables' frozen column).
        model_trained: parameters of what the model trains, its ``trained_module()``, without the
            head: the adapters of a frozen-encoder model (the tables' "Adapter" column), or the whole
            model of one trained end to end.
    """

    model_trained: int = 0

    @property
    def model_trained_share(self) -> float:
        """The model's trained parameters over all parameters — for adapters, the paper's "3.1% of
        the total parameters"."""
        return self.model_trained / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        """The counts under the papers' column names: ``adapter`` and ``adapter_share`` for
        :attr:`model_trained` and :attr:`model_trained_share`."""
        return {
            "trainable": self.trainable,
            "frozen": self.frozen,
            "adapter": self.model_trained,
            "total": self.total,
            "trainable_share": self.trainable_share,
            "adapter_share": self.model_trained_share,
        }


def count_trained(model: nn.Module, head: nn.Module | None = None) -> AdaptedCounts:
    """Count a model following :class:`~avpet_core.models.base.TrainableModel` (and its task head) in the
    papers' convention: ``model_trained`` counts what the model trains (its ``trained_module()``) — the
    adapters of a :class:`~avpet_core.models.base.FrozenEncodersModel`, the whole model of one trained end
    to end."""
    model_trained = sum(p.numel() for p in model.trained_module().parameters())
    counts = count_parameters(model)
    head_counts = count_parameters(head) if head is not None else ParamCounts(0, 0)
    return AdaptedCounts(
        model_trained=model_trained,
        trainable=counts.trainable + head_counts.trainable,
        frozen=counts.frozen + head_counts.frozen,
    )


def closed_form_adapter_parameters(
    adapter_config: SublayerAdapterConfig | None, embed_dim: int, depth: int, streams: str = "both"
) -> int:
    """Sublayer adapter parameters from the closed form: per adapter x sites per block x blocks x adapted streams."""
    if adapter_config is None:
        return 0
    per_block = adapter_config.num_parameters(embed_dim) * len(adapter_config.sites)
    return per_block * depth * len(PLACEMENTS[streams])


def count_without_weights(backbone: str, adapter="avpea", streams: str = "both", **adapter_options) -> AdaptedCounts:
    """Build the dual-stream model on PyTorch's ``meta`` device (no weights, no memory, no download) and count it."""
    with torch.device("meta"):
        model = build_dual_stream(backbone, adapter, streams, **adapter_options)
    return count_trained(model)


def count_trimodal_without_weights(
    backbone: str, text_encoder: str, adapter="lstta", streams: str = "both", **adapter_options
) -> tuple[AdaptedCounts, dict]:
    """Build the trimodal model on the ``meta`` device (no weights, no download) and count it; also returns
    the encoders' widths and the number of stages (what the closed forms need)."""
    with torch.device("meta"):
        model = build_trimodal(backbone, adapter, streams, text_encoder=text_encoder, **adapter_options)
    return count_trained(model), {"dims": model.dims, "stages": model.num_stages, "depth": len(model.visual.blocks)}


def closed_form_trimodal_parameters(
    adapter_config, dims: dict[str, int], stages: int, depth: int, streams: str = "both"
) -> int:
    """Adapter parameters from the closed forms: a stage adapter's block (LSTTA) per stage, or sublayer adapters
    in the ViT streams."""
    if adapter_config is None:
        return 0
    if isinstance(adapter_config, StageAdapterConfig):
        return adapter_config.num_parameters(dims) * stages
    return closed_form_adapter_parameters(adapter_config, dims["visual"], depth, streams)


@dataclass(frozen=True)
class PaperCount:
    """A parameter count as printed in a paper (millions), for the tables that put ours beside it."""

    method: str
    backbone: str
    adapter_m: float
    trainable_m: float | None
    frozen_m: float | None
    source: str


PAPER_COUNTS = (
    PaperCount("avpea", "vit_base_patch16_224", 3.7, 17.8, 102.5, "AV-PEA Table 1 (CMBS+AV-PEA)"),
    PaperCount("avpea", "vit_large_patch16_224", 12.9, 27.2, 325.6, "AV-PEA Table 1 (CMBS+AV-PEA)"),
    PaperCount("lavish", "vit_base_patch16_224", 3.9, 4.7, 102.5, "AV-PEA Table 1 (LAVISH, AVE)"),
    PaperCount("lavish", "vit_large_patch16_224", 13.4, 14.5, 325.6, "AV-PEA Table 1 (LAVISH, AVE)"),
)
"""The adapter / trainable / frozen counts AV-PEA's Table 1 reports (in millions)."""


def paper_count(method: str, backbone: str) -> PaperCount | None:
    """The paper's count for ``method`` on ``backbone`` (timm name, with or without its tag), if it reports one."""
    architecture = backbone.split(".")[0]
    for row in PAPER_COUNTS:
        if row.method == method and row.backbone == architecture:
            return row
    return None
