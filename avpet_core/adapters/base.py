"""The two interfaces an adapter method can have, one per role (as PEFT separates layer from model tuners).

Every method is described by a frozen config dataclass with a registry name ``method``, a
``build(...)`` that returns its module, a closed-form ``num_parameters(...)`` of that module and a
``describe(...)``; the role decides what they take and where the module sits:

* **sublayer adapters** (:class:`SublayerAdapterConfig`, modules :class:`SublayerAdapter`; registry
  :data:`avpet_core.adapters.SUBLAYER_ADAPTERS`: ``"houlsby"``, ``"avpea"``, ``"lavish"``) sit
  beside a sublayer of one stream in every block. ``sites`` says which: ``"attn"`` (in parallel
  with the attention sublayer, reading the block's input) and/or ``"mlp"`` (in parallel with the
  MLP sublayer, reading its input); ``build(dim)`` gives one adapter for tokens of width ``dim``;
* **stage adapters** (:class:`StageAdapterConfig`, modules :class:`StageAdapter`; registry
  :data:`avpet_core.adapters.STAGE_ADAPTERS`: ``"lstta"``) sit *between* two stages of several
  frozen encoders and adapt all their modalities at once; ``build(dims)`` gives one block for the
  widths ``{modality: width}``.

A sublayer adapter is called as::

    delta = adapter(tokens, others)     # tokens: (B, N, D) of its own stream
                                        # others: {modality: (B, M_m, D)} the other streams'
                                        #         tokens at the same block and site

and returns ``delta`` with the shape of ``tokens``; the model adds it to the sublayer's residual
sum. Both models of the book pass exactly one other modality, the other ViT stream
(``{"audio": X^a}`` to the visual stream's adapters, ``{"visual": X^v}`` to the audio stream's):
the dual-stream ViT (:mod:`avpet_core.models.dual_stream`) and the trimodal model
(:mod:`avpet_core.models.trimodal`) alike, whose language encoder never reaches a sublayer adapter
(the three modalities meet only in a stage adapter). A method that exchanges through one sequence
of other tokens (AV-PEA's CLS cross-attention, LAVISH's latents) reads :func:`joined_others`: the
other modalities' tokens side by side along the token axis — with one other modality, as the models
pass it, its tokens as they are (the bimodal methods of the papers, unchanged); several are our
generalisation, accepted but used by no model here.

A stage adapter is called as::

    out = block(tokens, text_mask)      # tokens: {modality: tokens}, e.g. visual (B, T, 1+N, D_v),
                                        #         audio (B, T, 1+M, D_a), text (B, L, D_q)
                                        # text_mask: (B, L), True on real text tokens

and returns a :class:`StageOutput`: a delta per modality, shaped as its tokens, which the model
adds before the next stage.

Every adapter's output is multiplied by gates that start at zero, so a freshly built adapter of
either role returns exactly zero and the adapted model starts as the frozen backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
from torch import nn

SITES = ("attn", "mlp")
"""Where an adapter can sit in a ViT block: beside the attention sublayer or beside the MLP."""


class AdapterConfigError(ValueError):
    """An adapter configuration that cannot be built (bad sizes, unknown method or option)."""


@dataclass(frozen=True)
class AdapterConfig:
    """Root of the adapter configs: what both roles share (a registry name, JSON round trip).

    A method's config subclasses one of the two roles, :class:`SublayerAdapterConfig` or
    :class:`StageAdapterConfig`, never this class directly.
    """

    method: ClassVar[str] = ""

    def build(self, shape) -> nn.Module:
        raise NotImplementedError

    def num_parameters(self, shape) -> int:
        """Closed-form count of one module's parameters (``shape``: what ``build`` takes)."""
        raise NotImplementedError

    def describe(self, shape) -> str:
        """A short human-readable summary, e.g. ``avpea(d=96, scaled CA)``."""
        raise NotImplementedError

    def as_dict(self) -> dict:
        """The config as a JSON-ready dict, with its method name."""
        return {"method": self.method, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "AdapterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - {"method"})
        if unknown:
            raise AdapterConfigError(f"{cls.__name__} has no option(s) {unknown}; options are {sorted(known)}")
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class SublayerAdapterConfig(AdapterConfig):
    """A method whose adapters sit beside the sublayers of one stream; subclasses set ``method`` and ``sites``."""

    sites: ClassVar[tuple[str, ...]] = ()

    def build(self, dim: int) -> "SublayerAdapter":
        raise NotImplementedError

    def num_parameters(self, dim: int) -> int:
        """Closed-form count of one adapter's parameters for tokens of width ``dim``."""
        raise NotImplementedError

    def describe(self, dim: int) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class StageAdapterConfig(AdapterConfig):
    """A method whose blocks sit between two stages of several encoders; subclasses set ``method``."""

    def build(self, dims: Mapping[str, int]) -> "StageAdapter":
        raise NotImplementedError

    def num_parameters(self, dims: Mapping[str, int]) -> int:
        """Closed-form count of one block's parameters for the widths ``{modality: width}``."""
        raise NotImplementedError

    def describe(self, dims: Mapping[str, int]) -> str:
        raise NotImplementedError


def bottleneck_width(dim: int, reduction: int, bottleneck_dim: int | None) -> int:
    """``d``: the explicit ``bottleneck_dim`` if given, else ``dim // reduction`` (AV-PEA: ``D = 8 d``)."""
    if bottleneck_dim is not None:
        if bottleneck_dim < 1:
            raise AdapterConfigError(f"bottleneck_dim must be at least 1, got {bottleneck_dim}")
        return bottleneck_dim
    if reduction < 1 or dim % reduction:
        raise AdapterConfigError(f"reduction {reduction} does not divide the token width {dim}")
    return dim // reduction


def joined_others(others: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(B, sum M_m, D)``: the other modalities' tokens concatenated in the mapping's order (one: as is)."""
    if not isinstance(others, Mapping):
        raise TypeError(
            f"an adapter reads the other modalities as a mapping {{modality: tokens}}, "
            f"e.g. adapter(tokens, {{'audio': audio_tokens}}); got {type(others).__name__}"
        )
    if not others:
        raise AdapterConfigError("an exchanging adapter needs the tokens of at least one other modality")
    tensors = list(others.values())
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)


class GatedModule(nn.Module):
    """What the modules of both roles share: scalar gates that start at zero."""

    def gates(self) -> dict[str, nn.Parameter]:
        """The module's scalar gates by name (all start at zero)."""
        return {name: p for name, p in self.named_parameters() if p.ndim == 0}


class SublayerAdapter(GatedModule):
    """Base class of the sublayer adapter modules: ``forward(tokens, others) -> delta`` (same shape as tokens)."""

    config: SublayerAdapterConfig

    def forward(self, tokens: torch.Tensor, others: Mapping[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


Adapter = SublayerAdapter
"""The earlier name of :class:`SublayerAdapter`, kept for code written against it."""


@dataclass
class StageOutput:
    """What a stage adapter returns: a delta per modality (shaped as its tokens) and, for methods that
    score frames (LSTTA's long-term filtering), a ``(B, T)`` importance."""

    deltas: dict[str, torch.Tensor]
    importance: torch.Tensor | None = None


class StageAdapter(GatedModule):
    """Base class of the stage adapter modules: ``forward(tokens, text_mask) -> StageOutput``."""

    config: StageAdapterConfig

    def forward(self, tokens: Mapping[str, torch.Tensor], text_mask: torch.Tensor) -> StageOutput:  # pragma: no cover
        raise NotImplementedError
