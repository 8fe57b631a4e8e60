"""The bottleneck adapter of Houlsby et al. (2019), gated, without any cross-modal exchange.

Token-wise, for every token ``x`` (a row of ``X``)::

    f(x) = W_up act(W_down x + b_down) + b_up        W_down: D -> d,  W_up: d -> D
    B(X) = h * f(X)                                  h: a scalar gate, initialised to 0

In this book it sits where AV-PEA sits — in parallel with each block's attention sublayer,
reading the block's input (AV-PEA eqs. 3-4 with ``B = h f(X)``) — so it is AV-PEA with the
cross-attention removed: the control that tells how much of AV-PEA's effect is the audio-visual
exchange and how much is simply having a trainable bottleneck in each block.

Parameters per adapter: ``2 D d + d + D`` (two linear layers with biases) ``+ 1`` (the gate ``h``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from avpet_core.adapters.base import AdapterConfigError, SublayerAdapter, SublayerAdapterConfig, bottleneck_width

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Bottleneck(nn.Module):
    """``f``: token-wise ``Linear(D -> d) -> activation -> Linear(d -> D)`` (AV-PEA eqs. 5-6)."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise AdapterConfigError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.down = nn.Linear(dim, hidden_dim)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(hidden_dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(tokens)))


@dataclass(frozen=True)
class BottleneckConfig(SublayerAdapterConfig):
    """Gated Houlsby bottleneck beside the attention sublayer.

    Attributes:
        reduction: ``d = D / reduction`` (8, as AV-PEA) unless ``bottleneck_dim`` is set.
        bottleneck_dim: explicit ``d``.
        activation: ``"relu"`` (AV-PEA's choice) or ``"gelu"``.
    """

    reduction: int = 8
    bottleneck_dim: int | None = None
    activation: str = "relu"

    method: ClassVar[str] = "houlsby"
    sites: ClassVar[tuple[str, ...]] = ("attn",)

    def build(self, dim: int) -> "BottleneckAdapter":
        return BottleneckAdapter(dim, self)

    def num_parameters(self, dim: int) -> int:
        d = bottleneck_width(dim, self.reduction, self.bottleneck_dim)
        return 2 * dim * d + d + dim + 1

    def describe(self, dim: int) -> str:
        return f"houlsby(d={bottleneck_width(dim, self.reduction, self.bottleneck_dim)}, {self.activation})"


class BottleneckAdapter(SublayerAdapter):
    """``B(X) = h * f(X)``; ``others`` is accepted for the common interface and ignored."""

    def __init__(self, dim: int, config: BottleneckConfig = BottleneckConfig()):
        super().__init__()
        self.config = config
        hidden = bottleneck_width(dim, config.reduction, config.bottleneck_dim)
        self.bottleneck = Bottleneck(dim, hidden, config.activation)
        self.h = nn.Parameter(torch.zeros(()))

    def forward(self, tokens: torch.Tensor, others: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.h * self.bottleneck(tokens)
