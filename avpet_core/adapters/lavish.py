"""LAVISH: latent audio-visual hybrid adapters (Lin et al., CVPR 2023) — the baseline AV-PEA beats.

Like AV-PEA, LAVISH adapts one frozen ViT shared by a visual and an audio stream, but it puts
**four** adapters in every block: for each stream one beside the attention sublayer (site
``"attn"``) and one beside the MLP sublayer (site ``"mlp"``), each reading that sublayer's input
and adding its output to the sublayer's residual sum.

An adapter of stream ``v`` with ``T`` learnable latent tokens ``L`` (``T x D``), given its stream's
tokens ``X`` (``N x D``) and the other stream's tokens ``X^a`` (``M x D``):

1. latents gather the other stream (raw dot product, no projections, no scale)::

       L' = L + softmax(L (X^a)^T) X^a                               (T x D)

2. the stream's tokens read the latents, through a gate that starts at zero::

       Z = X + gate_av * softmax(X L'^T) L'                          (N x D)

3. a grouped bottleneck on each token, through a second gate that starts at zero::

       B = gate * LN_out( BN_up( W_up ReLU( BN_down( W_down LN_in(Z) ) ) ) )

   with ``W_down: D -> D/r`` and ``W_up: D/r -> D`` bias-free grouped 1x1 convolutions (``g``
   groups), the BatchNorms and the LayerNorms optional.

The latents make the exchange cost ``O(T (N + M))``: linear in the tokens, but every token of a
stream talks to the other stream only through ``T`` summaries. AV-PEA instead lets one query (the
CLS) read every token of the other stream and hands the result to the patches in the next block.

Parameters per adapter: ``T D + 2 D (D/r) / g`` ``+ 2 D/r + 2 D`` (BatchNorms) ``+ 4 D``
(LayerNorms) ``+ 2`` (gates). With the AVE preset (``r = 8, g = 2, T = 2``, all norms) and four
adapters per block: 3.843M for ViT-B/16 (the paper: 3.9M), 13.394M for ViT-L/16 (13.4M).

Initialisation of the latents is not in the paper; we draw them from ``N(0, 0.02^2)`` like
timm's CLS token (identical latents would receive identical gradients and never separate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from avpet_core.adapters.base import Adapter, AdapterConfig, AdapterConfigError, joined_others


@dataclass(frozen=True)
class LavishConfig(AdapterConfig):
    """LAVISH settings; defaults are the AVE preset (:data:`LAVISH_AVE`).

    Attributes:
        reduction: ``r``; the bottleneck width is ``D / r``.
        groups: ``g``, groups of the two 1x1 convolutions.
        num_latents: ``T``, learnable latent tokens per adapter.
        batch_norm: BatchNorm after each convolution.
        layer_norm: LayerNorm before the bottleneck and after it.
    """

    reduction: int = 8
    groups: int = 2
    num_latents: int = 2
    batch_norm: bool = True
    layer_norm: bool = True

    method: ClassVar[str] = "lavish"
    sites: ClassVar[tuple[str, ...]] = ("attn", "mlp")

    def hidden_dim(self, dim: int) -> int:
        if self.reduction < 1 or dim % self.reduction:
            raise AdapterConfigError(f"LAVISH reduction {self.reduction} does not divide the token width {dim}")
        hidden = dim // self.reduction
        if self.groups < 1 or hidden % self.groups or dim % self.groups:
            raise AdapterConfigError(f"LAVISH groups {self.groups} must divide both {dim} and {hidden}")
        if self.num_latents < 1:
            raise AdapterConfigError(f"LAVISH needs at least one latent token, got {self.num_latents}")
        return hidden

    def build(self, dim: int) -> "LavishAdapter":
        return LavishAdapter(dim, self)

    def num_parameters(self, dim: int) -> int:
        hidden = self.hidden_dim(dim)
        count = self.num_latents * dim + 2 * dim * hidden // self.groups + 2
        if self.batch_norm:
            count += 2 * hidden + 2 * dim
        if self.layer_norm:
            count += 4 * dim
        return count

    def describe(self, dim: int) -> str:
        norms = "+".join(n for n, on in (("BN", self.batch_norm), ("LN", self.layer_norm)) if on) or "no norms"
        return f"lavish(T={self.num_latents}, D/r={self.hidden_dim(dim)}, g={self.groups}, {norms})"


LAVISH_AVE = LavishConfig()
"""LAVISH's AVE setting: r = 8, g = 2, T = 2, BatchNorm and both LayerNorms."""

LAVISH_AVQA = LavishConfig(groups=4, num_latents=64, batch_norm=False)
"""LAVISH's MUSIC-AVQA setting: r = 8, g = 4, T = 64, no BatchNorm, both LayerNorms."""


def _optional(enabled: bool, module: nn.Module) -> nn.Module:
    return module if enabled else nn.Identity()


def raw_attention(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T) K``: dot-product attention without projections or scale, as LAVISH writes it."""
    return torch.softmax(query @ keys.transpose(1, 2), dim=-1) @ keys


class LavishAdapter(Adapter):
    """One LAVISH adapter (steps 1-3 of the module docstring)."""

    def __init__(self, dim: int, config: LavishConfig = LAVISH_AVE):
        super().__init__()
        self.config = config
        hidden = config.hidden_dim(dim)
        self.latents = nn.Parameter(torch.randn(config.num_latents, dim) * 0.02)
        self.gate_av = nn.Parameter(torch.zeros(()))
        self.norm_in = _optional(config.layer_norm, nn.LayerNorm(dim))
        self.down = nn.Conv1d(dim, hidden, kernel_size=1, groups=config.groups, bias=False)
        self.bn_down = _optional(config.batch_norm, nn.BatchNorm1d(hidden))
        self.act = nn.ReLU()
        self.up = nn.Conv1d(hidden, dim, kernel_size=1, groups=config.groups, bias=False)
        self.bn_up = _optional(config.batch_norm, nn.BatchNorm1d(dim))
        self.norm_out = _optional(config.layer_norm, nn.LayerNorm(dim))
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, tokens: torch.Tensor, others: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``others``: the other stream's tokens by modality (several: the latents gather them all, ours)."""
        latents = self.latents.expand(tokens.shape[0], -1, -1)
        latents = latents + raw_attention(latents, joined_others(others))      # 1. latents gather the other stream
        mixed = tokens + self.gate_av * raw_attention(tokens, latents)         # 2. tokens read the latents
        z = self.norm_in(mixed).transpose(1, 2)                                # (B, D, N) for the 1x1 convs
        z = self.bn_up(self.up(self.act(self.bn_down(self.down(z)))))          # 3. grouped bottleneck
        return self.gate * self.norm_out(z.transpose(1, 2))
