"""The interface every adapter method shares.

An adapter method is described by a frozen config dataclass (a subclass of :class:`AdapterConfig`)
that knows three things:

* ``method`` — its registry name (``"houlsby"``, ``"avpea"``, ``"lavish"``);
* ``sites`` — where in a transformer block its adapters sit: ``"attn"`` (in parallel with the
  attention sublayer, reading the block's input) and/or ``"mlp"`` (in parallel with the MLP
  sublayer, reading its input);
* ``build(dim)`` — one adapter module for tokens of width ``dim``, and ``num_parameters(dim)`` —
  the closed-form parameter count of that module.

Every adapter module (a subclass of :class:`Adapter`) has the same call signature::

    delta = adapter(tokens, others)     # tokens: (B, N, D) of its own stream
                                        # others: {modality: (B, M_m, D)} the other streams'
                                        #         tokens at the same block and site

and returns ``delta`` with the shape of ``tokens``; the model adds it to the sublayer's residual
sum. A dual-stream model passes one other modality (``{"audio": X^a}`` to the visual stream's
adapters); a trimodal model passes two. A method that exchanges through one sequence of other
tokens (AV-PEA's CLS cross-attention, LAVISH's latents) reads :func:`joined_others`: the other
modalities' tokens side by side along the token axis (with one other modality, its tokens as
they are: the bimodal methods of the papers, unchanged). Every adapter's output is multiplied by a gate that starts at zero, so a freshly built adapter
returns exactly zero and the adapted model starts as the frozen backbone.
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
    """Base class of the adapter configs; subclasses set ``method`` and ``sites``."""

    method: ClassVar[str] = ""
    sites: ClassVar[tuple[str, ...]] = ()

    def build(self, dim: int) -> "Adapter":
        raise NotImplementedError

    def num_parameters(self, dim: int) -> int:
        """Closed-form count of one adapter's parameters for tokens of width ``dim``."""
        raise NotImplementedError

    def describe(self, dim: int) -> str:
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
        raise TypeError(f"an adapter reads the other modalities as a mapping {{modality: tokens}}, "
                        f"e.g. adapter(tokens, {{'audio': audio_tokens}}); got {type(others).__name__}")
    if not others:
        raise AdapterConfigError("an exchanging adapter needs the tokens of at least one other modality")
    tensors = list(others.values())
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)


class Adapter(nn.Module):
    """Base class of the adapter modules: ``forward(tokens, others) -> delta`` (same shape as tokens)."""

    config: AdapterConfig

    def forward(self, tokens: torch.Tensor, others: Mapping[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def gates(self) -> dict[str, nn.Parameter]:
        """The adapter's scalar gates by name (all start at zero)."""
        return {name: p for name, p in self.named_parameters() if p.ndim == 0}
