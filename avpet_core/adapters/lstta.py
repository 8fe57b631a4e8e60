"""LSTTA: the long short-term trimodal adapter (Liu et al., ACM MM 2023) — a reconstruction.

**What the paper states** (its abstract and the caption of its Figure 1; the full text, its
equations and sizes are not public, and no code was released): pretrained audio, visual and
language encoders stay frozen; LSTTA blocks are inserted *between their sequential blocks*; each
block has two complementary modules — **long-term semantic filtering** (the semantic importance of
every frame over the whole video; redundant or unimportant frames are suppressed) and
**short-term semantic interaction** (local cross-modal alignment within short periods); it can
inherit any unimodal or bimodal pretrained encoders and needs no trimodal pretraining.

**Everything below the stated properties is ours**, chosen so that each property holds and a
fresh LSTTA is exactly the frozen encoders. Notation: a video of ``T`` one-second segments;
``X^v_t`` ``(1+N) x D_v`` the visual tokens of segment ``t`` (CLS first), ``X^a_t`` ``(1+M) x D_a``
the audio tokens, ``Q`` ``L x D_q`` the question's tokens with padding mask ``m``; ``d`` the
adapter width (ours: ``D_v / 8``, as AV-PEA's bottleneck); ``LN`` a LayerNorm without parameters
(ours: block inputs have norms of tens to hundreds).

Long-term semantic filtering (LSF), one importance per frame, from the whole video and the
question::

    z_t   = W_v LN(x^v_cls,t) + W_a LN(x^a_cls,t) + W_q LN(mean_m Q)       (L1)  question-aware frame summary
    z'_t  = z_t + sum_s softmax_s(z_t W_Q (z_s W_K)^T / sqrt(d)) z_s W_V  (L2)  every frame reads all T frames
    alpha_t = sigmoid(u . z'_t + b)                                       (L3)  importance in (0, 1)
    dX^m_t  = g^m_f (alpha_t - 1) X^m_t,   m in {v, a}                    (L4)  unimportant frames shrink

Short-term semantic interaction (SSI), within windows of ``w`` consecutive segments
``W_k = {k w, ..., k w + w - 1}``::

    H^m_t  = LN(X^m_t) D_m,  H^q = LN(Q) D_q                              (S1)  down to d (with biases)
    U^m_t  = softmax(H^m_t K_k^T / sqrt(d)) K_k,   t in W_k,              (S2)  parameter-free attention over
             K_k = [H^{m'}_s : m' != m, s in W_k ; H^q (unpadded)]              the window's other modality
                                                                                and the question
    U^q    = softmax(H^q C^T / sqrt(d)) C,                                      the question reads every
             C = [H^v_{t,cls} ; H^a_{t,cls} : all t]                            segment's CLS
    dX^m   = g^m_s U^m U_m + c_m,   m in {v, a, q}                        (S3)  up to D_m, gated

The block returns the deltas; the trimodal model adds ``dX = dX_LSF + dX_SSI`` to every modality's
tokens between two stages of the encoders (:mod:`avpet_core.models.trimodal`). All gates ``g`` start
at zero, so a new block returns exact zeros and the encoders run as they were pretrained. The two
modules are separable (``long_term``, ``short_term``), and ``window`` is ``w``; with ``w = 1`` SSI
exchanges only within a segment.

Parameters per block (``D_v, D_a, D_q`` the widths, ``d`` the adapter's)::

    LSF: (D_v + D_a + D_q) d + 3 d   +   3 (d^2 + d)   +   d + 1   +   2 gates
    SSI: sum_m (D_m d + d) + sum_m (d D_m + D_m)   +   3 gates
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avpet_core.adapters.base import AdapterConfigError, StageAdapter, StageAdapterConfig, StageOutput, bottleneck_width

MODALITIES = ("visual", "audio", "text")
"""The modalities an LSTTA block reads and adapts (the text is the question)."""

FRAME_MODALITIES = ("visual", "audio")


@dataclass(frozen=True)
class LSTTAConfig(StageAdapterConfig):
    """LSTTA settings (every choice is ours except the two modules themselves).

    Attributes:
        reduction: ``d = D_v / reduction`` (8, as AV-PEA's bottleneck).
        bottleneck_dim: explicit ``d`` (overrides ``reduction``).
        long_term: use long-term semantic filtering (LSF, eqs. L1-L4).
        short_term: use short-term semantic interaction (SSI, eqs. S1-S3).
        window: ``w``, the segments of one SSI window.
    """

    reduction: int = 8
    bottleneck_dim: int | None = None
    long_term: bool = True
    short_term: bool = True
    window: int = 2

    method: ClassVar[str] = "lstta"

    def __post_init__(self):
        if not (self.long_term or self.short_term):
            raise AdapterConfigError("an LSTTA block needs long-term filtering, short-term interaction or both")
        if self.window < 1:
            raise AdapterConfigError(f"the SSI window must be at least one segment, got {self.window}")

    def width(self, dims: Mapping[str, int]) -> int:
        """``d``, from the visual width."""
        return bottleneck_width(dims["visual"], self.reduction, self.bottleneck_dim)

    def build(self, dims: Mapping[str, int]) -> "LSTTABlock":
        return LSTTABlock(dims, self)

    def num_parameters(self, dims: Mapping[str, int]) -> int:
        """Closed-form parameters of one block (module docstring)."""
        d = self.width(dims)
        widths = [dims[m] for m in MODALITIES]
        total = 0
        if self.long_term:
            total += sum(widths) * d + 3 * d + 3 * (d * d + d) + d + 1 + len(FRAME_MODALITIES)
        if self.short_term:
            total += sum(w * d + d for w in widths) + sum(d * w + w for w in widths) + len(MODALITIES)
        return total

    def describe(self, dims: Mapping[str, int]) -> str:
        parts = [p for p, on in (("LSF", self.long_term), (f"SSI w={self.window}", self.short_term)) if on]
        return f"lstta(d={self.width(dims)}, {' + '.join(parts)})"


def _normed(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:])


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, L, D), (B, L) -> (B, D)``: the mean over the real (``mask``) tokens."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class LongTermFiltering(nn.Module):
    """LSF (eqs. L1-L4): one importance per frame from the whole video and the question."""

    def __init__(self, dims: Mapping[str, int], d: int):
        super().__init__()
        self.summaries = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in MODALITIES})  # W_v, W_a, W_q (L1)
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)  # (L2)
        self.score = nn.Linear(d, 1)  # u, b (L3)
        self.gates = nn.ParameterDict({m: nn.Parameter(torch.zeros(())) for m in FRAME_MODALITIES})  # g^m_f (L4)

    def importance(self, tokens: Mapping[str, torch.Tensor], text_mask: torch.Tensor) -> torch.Tensor:
        """``alpha`` ``(B, T)`` in ``(0, 1)`` (eqs. L1-L3)."""
        question = masked_mean(_normed(tokens["text"]), text_mask)  # (B, D_q)
        z = (
            self.summaries["visual"](_normed(tokens["visual"][:, :, 0]))
            + self.summaries["audio"](_normed(tokens["audio"][:, :, 0]))
            + self.summaries["text"](question).unsqueeze(1)
        )  # (B, T, d)  L1
        attended = F.scaled_dot_product_attention(self.query(z), self.key(z), self.value(z))
        return torch.sigmoid(self.score(z + attended)).squeeze(-1)  # L2, L3

    def forward(self, tokens: Mapping[str, torch.Tensor], text_mask: torch.Tensor):
        alpha = self.importance(tokens, text_mask)
        scale = (alpha - 1.0)[:, :, None, None]
        deltas = {m: self.gates[m] * scale * tokens[m] for m in FRAME_MODALITIES}  # L4
        return deltas, alpha


class ShortTermInteraction(nn.Module):
    """SSI (eqs. S1-S3): each modality's tokens read the other modality and the question within ``w`` segments."""

    def __init__(self, dims: Mapping[str, int], d: int, window: int):
        super().__init__()
        self.window = window
        self.down = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in MODALITIES})  # D_m (S1)
        self.up = nn.ModuleDict({m: nn.Linear(d, dims[m]) for m in MODALITIES})  # U_m, c_m (S3)
        self.gates = nn.ParameterDict({m: nn.Parameter(torch.zeros(())) for m in MODALITIES})  # g^m_s

    def windows(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, n, d) -> (B, K, w n, d)`` and the ``(K, w n)`` mask of real (not padded) positions."""
        b, t, n, d = h.shape
        k = -(-t // self.window)
        padded = F.pad(h, (0, 0, 0, 0, 0, k * self.window - t))
        real = torch.arange(k * self.window, device=h.device) < t
        return padded.reshape(b, k, self.window * n, d), real.reshape(k, self.window).repeat_interleave(n, dim=1)

    def forward(self, tokens: Mapping[str, torch.Tensor], text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = {m: self.down[m](_normed(tokens[m])) for m in MODALITIES}  # S1
        b, t = tokens["visual"].shape[:2]
        question, d = h["text"], h["text"].shape[-1]
        windows = {m: self.windows(h[m]) for m in FRAME_MODALITIES}
        deltas = {}
        for m in FRAME_MODALITIES:
            (queries, _), (others, other_real) = windows[m], windows["audio" if m == "visual" else "visual"]
            k = queries.shape[1]
            keys = torch.cat([others, question.unsqueeze(1).expand(b, k, -1, d)], dim=2)  # K_k
            allowed = torch.cat([other_real.expand(b, k, -1), text_mask.unsqueeze(1).expand(b, k, -1)], dim=2)
            attended = F.scaled_dot_product_attention(queries, keys, keys, attn_mask=allowed.unsqueeze(2))  # S2
            attended = attended.reshape(b, k * self.window, -1, d)[:, :t]
            deltas[m] = self.gates[m] * self.up[m](attended)  # S3
        summaries = torch.cat([h["visual"][:, :, 0], h["audio"][:, :, 0]], dim=1)  # C: (B, 2T, d)
        read = F.scaled_dot_product_attention(question, summaries, summaries)
        deltas["text"] = self.gates["text"] * self.up["text"](read)
        return deltas


LSTTAOutput = StageOutput
"""What one block returns: the deltas of every modality's tokens and LSF's frame importance ``(B, T)``
(``None`` without LSF) — the stage adapters' :class:`~avpet_core.adapters.base.StageOutput`."""


class LSTTABlock(StageAdapter):
    """One LSTTA block between two stages of the frozen encoders: ``dX = dX_LSF + dX_SSI``."""

    def __init__(self, dims: Mapping[str, int], config: LSTTAConfig = LSTTAConfig()):
        super().__init__()
        missing = [m for m in MODALITIES if m not in dims]
        if missing:
            raise AdapterConfigError(f"an LSTTA block needs the widths of {list(MODALITIES)}; missing {missing}")
        self.config, self.dims = config, dict(dims)
        d = config.width(dims)
        self.long_term = LongTermFiltering(dims, d) if config.long_term else None
        self.short_term = ShortTermInteraction(dims, d, config.window) if config.short_term else None

    def forward(self, tokens: Mapping[str, torch.Tensor], text_mask: torch.Tensor) -> LSTTAOutput:
        """``tokens``: ``visual`` ``(B, T, 1+N, D_v)``, ``audio`` ``(B, T, 1+M, D_a)``, ``text`` ``(B, L, D_q)``;
        ``text_mask`` ``(B, L)``, True on real tokens."""
        deltas = {m: torch.zeros_like(tokens[m]) for m in MODALITIES}
        importance = None
        if self.long_term is not None:
            filtered, importance = self.long_term(tokens, text_mask)
            deltas = {m: deltas[m] + filtered.get(m, 0.0) for m in MODALITIES}
        if self.short_term is not None:
            interaction = self.short_term(tokens, text_mask)
            deltas = {m: deltas[m] + interaction[m] for m in MODALITIES}
        return LSTTAOutput(deltas=deltas, importance=importance)
