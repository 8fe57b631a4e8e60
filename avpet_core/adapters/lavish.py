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

A grouped 1x1 convolution over the tokens is ``g`` matrix products side by side: group ``i``
maps its slice of ``D / g`` input channels to its slice of the outputs with its own
``(out / g) x (D / g)`` matrix. The adapter computes it that way (:func:`grouped_linear`), on the
``(tokens, channels)`` layout the ViT already has, with no transposes to the ``(channels,
tokens)`` layout a ``Conv1d`` needs. Measured on one pinned CPU thread at ViT-B/16 sizes (batch 4,
both streams, alternating runs): the forward went from 1.10x to 1.07x the frozen backbone's, the
training step to 0.92x of the convolution form's. The weights stay the ``Conv1d`` modules'
(``down.weight`` of shape ``(D/r, D/g, 1)``), so checkpoints are unchanged, and a BatchNorm over
``(tokens, channels)`` rows normalises each channel over the same batch and token positions as
over ``(batch, channels, tokens)``; the results agree with the convolution form to float rounding
(not bit for bit: the products and the convolution sum in different orders).

The latents make the exchange cost ``O(T (N + M))``: linear in the tokens, but every token of a
stream talks to the other stream only through ``T`` summaries. AV-PEA instead lets one query (the
CLS) read every token of the other stream and hands the result to the patches in the next block.

Parameters per adapter: ``T D + 2 D (D/r) / g`` ``+ 2 D/r + 2 D`` (BatchNorms) ``+ 4 D``
(LayerNorms) ``+ 2`` (gates). With the AVE preset (``r = 8, g = 2, T = 2``, all norms) and four
adapters per block: 3.843M for ViT-B/16 (the paper: 3.9M), 13.394M for ViT-L/16 (13.4M).

Initialisation of the latents is not in the paper; we draw them from ``N(0, 0.02^2)`` like
timm's CLS token (identical latents would receive identical gradients and never separate).
LAVISH's reference code draws them uniformly on ``[0, 1)`` (``torch.rand``) instead: latents of
norm about ``sqrt(D / 3)``, all with positive entries, whose raw-dot-product attention starts
far from uniform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from avpet_core.adapters.base import AdapterConfigError, SublayerAdapter, SublayerAdapterConfig, joined_others


@dataclass(frozen=True)
class LavishConfig(SublayerAdapterConfig):
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


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The grouped 1x1 convolution ``Conv1d(weight, groups)`` applied to rows of ``x``, as matrix products.

    Args:
        x: ``(M, C_in)`` rows (tokens), channels last.
        weight: a ``Conv1d`` weight ``(C_out, C_in / groups, 1)``.

    Returns:
        ``(M, C_out)``: group ``i`` of the outputs is ``x[:, group i of the inputs] @ W_i^T``.
    """
    w = weight.squeeze(-1)
    if groups == 1:
        return x @ w.t()
    width_in, width_out = w.shape[1], w.shape[0] // groups
    return torch.cat(
        [x[:, i * width_in : (i + 1) * width_in] @ w[i * width_out : (i + 1) * width_out].t() for i in range(groups)],
        dim=1,
    )


def raw_attention(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T) K``: dot-product attention without projections or scale, as LAVISH writes it."""
    return torch.softmax(query @ keys.transpose(1, 2), dim=-1) @ keys


class LavishAdapter(SublayerAdapter):
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
        latents = latents + raw_attention(latents, joined_others(others))  # 1. latents gather the other stream
        mixed = tokens + self.gate_av * raw_attention(tokens, latents)  # 2. tokens read the latents
        z = self.norm_in(mixed)
        rows = z.reshape(-1, z.shape[-1])  # (B N, D): one row per token
        groups = self.config.groups
        rows = self.act(self.bn_down(grouped_linear(rows, self.down.weight, groups)))  # 3. grouped bottleneck
        rows = self.bn_up(grouped_linear(rows, self.up.weight, groups))
        return self.gate * self.norm_out(rows.view(z.shape))
