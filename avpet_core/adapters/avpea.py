"""AV-PEA: the audio-visual parameter-efficient adapter (Radman & Laaksonen, VISAPP 2024, Sec. 3.3).

One frozen ViT runs twice per sample, on the frame (visual stream ``v``) and on the spectrogram
(audio stream ``a``). Block ``l`` of each stream gets its own AV-PEA adapter, added in parallel with
the attention sublayer (eqs. 3-4)::

    Y^v = X^v + MSA(X^v) + B^v              X^v_{l+1} = Y^v + FFN(Y^v)
    Y^a = X^a + MSA(X^a) + B^a              X^a_{l+1} = Y^a + FFN(Y^a)

with ``X = [x_cls ; X_p]`` the block's input tokens. The adapter of stream ``v`` (swap ``v`` and
``a`` for the audio stream):

    CA^v = g^v * softmax( x^v_cls (X^a)^T * s ) X^a          (eqs. 7-8: 1 x D, no projections)
    B^v  = h^v * f^v( [CA^v ; X^v_p] )                       (eqs. 5-6)

* The cross-attention (CA) is parameter-free: the stream's own CLS token is the only query and the
  other stream's tokens (its CLS and its patches) are both keys and values. Its cost is linear in
  the other stream's token count — one row of attention, not a square matrix.
* ``[CA ; X_p]``: the cross-attended CLS *replaces* the CLS row; the patch rows are the stream's own.
* ``f`` is the token-wise bottleneck ``Linear(D -> d) -> ReLU -> Linear(d -> D)`` with ``d = D / 8``.
* ``g`` and ``h`` are scalar gates initialised to zero, so at initialisation ``B = 0`` and the
  dual-stream model is exactly the frozen ViT (Sec. 4.1).

The scale ``s``. The paper writes the softmax without a scale. Block inputs of a ViT have norms of
tens to hundreds, so unscaled logits ``x_cls . x_j`` reach the thousands and the softmax collapses
onto a single token. We use ``s = 1 / sqrt(D)`` by default, as in scaled dot-product attention, and
keep the literal form available as ``AVPEAConfig(scale_attention=False)``.

Parameters per adapter: ``2 D d + d + D`` (the bottleneck) ``+ 2`` (the gates ``g`` and ``h``).
For ViT-B/16 (D = 768, d = 96, 12 blocks, two streams) that is 3.560M; the paper reports 3.7M.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avpet_core.adapters.base import SublayerAdapter, SublayerAdapterConfig, bottleneck_width, joined_others
from avpet_core.adapters.bottleneck import Bottleneck


def cls_cross_attention(
    cls: torch.Tensor, other: torch.Tensor, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameter-free CLS cross-attention (eqs. 7-8 without the gate).

    Args:
        cls: ``(B, 1, D)``, the query stream's CLS token.
        other: ``(B, M, D)``, all tokens of the other stream.
        scale: multiplies the logits (``1/sqrt(D)`` or ``1``).

    Returns:
        ``(attended, weights)``: ``softmax(cls other^T * scale) other`` of shape ``(B, 1, D)`` and the
        attention weights ``(B, 1, M)`` — one row per sample, linear in ``M``.
    """
    weights = torch.softmax(cls @ other.transpose(1, 2) * scale, dim=-1)
    return weights @ other, weights


@dataclass(frozen=True)
class AVPEAConfig(SublayerAdapterConfig):
    """AV-PEA settings (Sec. 4.1).

    Attributes:
        reduction: ``D = reduction * d`` (8: d = 96 for ViT-B/16, 128 for ViT-L/16).
        bottleneck_dim: explicit ``d`` (overrides ``reduction``).
        scale_attention: scale the CA logits by ``1/sqrt(D)`` (our choice; the paper writes none).
    """

    reduction: int = 8
    bottleneck_dim: int | None = None
    scale_attention: bool = True

    method: ClassVar[str] = "avpea"
    sites: ClassVar[tuple[str, ...]] = ("attn",)

    def build(self, dim: int) -> "AVPEAAdapter":
        return AVPEAAdapter(dim, self)

    def num_parameters(self, dim: int) -> int:
        d = bottleneck_width(dim, self.reduction, self.bottleneck_dim)
        return 2 * dim * d + d + dim + 2

    def describe(self, dim: int) -> str:
        d = bottleneck_width(dim, self.reduction, self.bottleneck_dim)
        return f"avpea(d={d}, {'1/sqrt(D)-scaled' if self.scale_attention else 'unscaled'} CA)"


class AVPEAAdapter(SublayerAdapter):
    """One AV-PEA adapter: ``B = h * f([g * CA(x_cls, X_other) ; X_p])`` (eqs. 5-8)."""

    def __init__(self, dim: int, config: AVPEAConfig = AVPEAConfig()):
        super().__init__()
        self.config = config
        self.scale = 1.0 / math.sqrt(dim) if config.scale_attention else 1.0
        self.bottleneck = Bottleneck(dim, bottleneck_width(dim, config.reduction, config.bottleneck_dim), "relu")
        self.g = nn.Parameter(torch.zeros(()))  # gate of the cross-attention (eqs. 7-8)
        self.h = nn.Parameter(torch.zeros(()))  # gate of the bottleneck (eqs. 5-6)

    def cross_attention(self, tokens: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(CA, weights)``: the gated cross-attended CLS ``(B, 1, D)`` and the weights ``(B, 1, M)``."""
        attended, weights = cls_cross_attention(tokens[:, :1], other, self.scale)
        return self.g * attended, weights

    def forward(self, tokens: torch.Tensor, others: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``others``: the other stream's tokens by modality (several: the CLS reads them all, ours).

        The same operations as ``h * bottleneck(cat(cross_attention(...)[0], X_p))``, bit for bit,
        called directly (``bmm``, ``F.linear``) rather than through the submodules: an adapter runs
        24 times a forward in ViT-B/16, and at small batches the calls cost more than the work.
        """
        other = joined_others(others)
        weights = torch.softmax(torch.bmm(tokens[:, :1], other.transpose(1, 2)) * self.scale, dim=-1)
        ca = self.g * torch.bmm(weights, other)  # eq. 7 (or 8)
        f = self.bottleneck
        hidden = torch.relu(F.linear(torch.cat([ca, tokens[:, 1:]], dim=1), f.down.weight, f.down.bias))
        return self.h * F.linear(hidden, f.up.weight, f.up.bias)  # eq. 5 (or 6)
