"""Shared low-rank multimodal Transformers (Lee et al., ICLR 2021).

A clip is a sequence of segments; a visual CNN and an audio CNN (:mod:`avpet_core.models.stems`)
give one vector per segment, projected ``Linear -> LayerNorm`` to width D. A learned summary token
(BOS) per modality goes in front, learned position embeddings are added, and:

* **mid fusion** (default): a visual Transformer and an audio Transformer, then a multimodal
  Transformer over their concatenated outputs, whose position ids restart per modality and whose
  tokens carry a token-type embedding;
* **early fusion**: one multimodal Transformer over the concatenated embeddings;
* **late fusion**: the two unimodal Transformers only.

Every Transformer layer is post-LN (BERT style) with GELU, and every one of its six weight matrices
(q, k, v, attention output, FFN in, FFN out) is either a dense ``nn.Linear`` or, with ``rank=O``,
the factorised layer of the paper (:class:`FactorisedLinear`)::

    y = U S_m normalize(V_m^T x) + b,     S_m = exp(A_m - A_m^T)

with ``U`` (M x O) and ``b`` shared by the modality groups and ``V_m`` (N x O), ``A_m`` (O x O)
private to group m; ``S_m`` is orthogonal because it is the exponential of a skew-symmetric
matrix. Two switches share weights: ``share_layers`` applies one layer at every depth
(ALBERT style), ``share_modalities`` lets one stack of layers serve all the Transformers (the
modality groups are then the Transformers: visual, audio, multimodal). LayerNorms belong to the
layer, so they are shared with it.

**What the parameter table counts.** "Transformer weights" are the parameters of the Transformer
layers — the six weight matrices *with their biases* and the two LayerNorms of each layer
(BERT-base's 7,087,872 per layer at D 768, FFN 3072) — and nothing else: not the CNN stems, the
input projections, the summary tokens, the position and token-type embeddings, nor any head. With
that definition the module counts of :data:`PAPER_TRANSFORMER` are 127,581,696 (no sharing, 3
Transformers x 6 layers), 21,263,616 (across layers), 42,527,232 (across modalities), 7,087,872
(both) and 3,843,840 with rank 128 — the paper's "97% reduction". The low-rank figure holds each
``A_m`` as a full O x O matrix, as the module stores it; only its strict upper triangle is free
(``A - A^T`` discards the rest), and counting degrees of freedom instead gives 3,695,232
(:func:`closed_form_transformer_parameters` with ``free_rotation_only=True``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from avpet_core.models.stems import AudioStem, StemConfig, VisualStem

FUSIONS = ("early", "mid", "late")
MODALITIES = ("visual", "audio")
TRANSFORMERS = {"early": ("multimodal",), "mid": ("visual", "audio", "multimodal"), "late": ("visual", "audio")}
"""The Transformers each fusion runs, in order; with ``share_modalities`` they are the modality groups."""
WEIGHTS = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")


class SharedTransformerError(ValueError):
    """An impossible configuration of :class:`SharedMultimodalTransformer`."""


@dataclass(frozen=True)
class SharedTransformerConfig:
    """One class, many variants: sizes, sharing switches, rank and fusion.

    Attributes:
        dim, depth, heads, ffn_dim: the Transformer's width D, layers L, heads and FFN width.
        rank: O of the factorised weights, or ``None`` for dense ``nn.Linear`` weights.
        share_layers: one layer applied at all L depths of a Transformer (ALBERT style).
        share_modalities: one stack of layers for all Transformers (visual, audio, multimodal).
        fusion: ``"early"``, ``"mid"`` (default) or ``"late"``.
        num_segments: segments per clip (SynthAVE and AVE: 10); positions are ``num_segments + 1``.
        stems: the CNN stems' widths.
        dropout: dropout on attention output and FFN output (0 for deterministic CPU runs).
        layer_norm_eps: the LayerNorms' epsilon.
    """

    dim: int = 768
    depth: int = 6
    heads: int = 12
    ffn_dim: int = 3072
    rank: int | None = 128
    share_layers: bool = True
    share_modalities: bool = True
    fusion: str = "mid"
    num_segments: int = 10
    stems: StemConfig = field(default_factory=StemConfig)
    dropout: float = 0.0
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise SharedTransformerError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if self.dim % self.heads:
            raise SharedTransformerError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.depth < 1 or self.num_segments < 1:
            raise SharedTransformerError("depth and num_segments must be positive")
        if self.rank is not None and self.rank < 1:
            raise SharedTransformerError(f"rank must be positive or None, got {self.rank}")

    @property
    def transformers(self) -> tuple[str, ...]:
        return TRANSFORMERS[self.fusion]

    @property
    def groups(self) -> int:
        """Modality groups per layer: the Transformers a shared layer serves (1 if not shared)."""
        return len(self.transformers) if self.share_modalities else 1

    @property
    def num_layers(self) -> int:
        """Distinct layers held: (1 or L) x (1 or number of Transformers)."""
        depth = 1 if self.share_layers else self.depth
        return depth * (1 if self.share_modalities else len(self.transformers))

    def weight_shapes(self) -> tuple[tuple[int, int], ...]:
        """``(out, in)`` of q, k, v, attention output, FFN in, FFN out."""
        d, f = self.dim, self.ffn_dim
        return ((d, d), (d, d), (d, d), (d, d), (f, d), (d, f))


PAPER_TRANSFORMER = SharedTransformerConfig(dim=768, depth=6, heads=12, ffn_dim=3072, rank=128)
"""The paper's sizes: D 768, L 6, 12 heads, FFN 3072, rank 128, shared across layers and modalities, mid fusion."""


class Variant(NamedTuple):
    name: str
    config: SharedTransformerConfig


def sharing_variants(base: SharedTransformerConfig = PAPER_TRANSFORMER) -> tuple[Variant, ...]:
    """The parameter table's five rows as configurations of ``base`` (its rank is the low-rank row's)."""
    rank = base.rank or 128
    dense = replace(base, rank=None)
    return (
        Variant("no sharing", replace(dense, share_layers=False, share_modalities=False)),
        Variant("across layers", replace(dense, share_layers=True, share_modalities=False)),
        Variant("across modalities", replace(dense, share_layers=False, share_modalities=True)),
        Variant("layers + modalities", replace(dense, share_layers=True, share_modalities=True)),
        Variant("layers + modalities + low rank", replace(dense, share_layers=True, share_modalities=True, rank=rank)),
    )


def closed_form_transformer_parameters(config: SharedTransformerConfig, free_rotation_only: bool = False) -> int:
    """Transformer weights (six matrices with biases, two LayerNorms, per distinct layer) in closed form.

    Per layer: dense ``sum(M N + M) + 4 D``; factorised ``sum(M O + M + G (N O + O O)) + 4 D`` with G
    the modality groups (``O (O - 1) / 2`` instead of ``O O`` if ``free_rotation_only``).
    """
    o = config.rank
    rotation = (o * (o - 1) // 2 if free_rotation_only else o * o) if o is not None else 0
    per_layer = 4 * config.dim  # two LayerNorms, weight and bias
    for m, n in config.weight_shapes():
        per_layer += m * n + m if o is None else m * o + m + config.groups * (n * o + rotation)
    return config.num_layers * per_layer


# ---------------------------------------------------------------------------------------------
# The factorised linear layer and the Transformer layer.
# ---------------------------------------------------------------------------------------------


def skew_exponential(a: torch.Tensor) -> torch.Tensor:
    """``exp(A - A^T)``: an orthogonal matrix (batched over leading dimensions)."""
    return torch.linalg.matrix_exp(a - a.transpose(-1, -2))


class FactorisedLinear(nn.Module):
    """``y = U S_m normalize(V_m^T x) + b`` with ``S_m = exp(A_m - A_m^T)``.

    Parameters: ``U`` ``(out, rank)`` and ``bias`` ``(out,)`` shared; ``V`` ``(groups, in, rank)``
    and ``A`` ``(groups, rank, rank)`` private to each group.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, groups: int = 1):
        super().__init__()
        self.in_features, self.out_features, self.rank, self.groups = in_features, out_features, rank, groups
        # normalize() makes the code unit-norm, so U's scale sets the output's:
        # var(y_i) = 1/3 as nn.Linear on LN output.
        self.U = nn.Parameter(torch.randn(out_features, rank) / math.sqrt(3.0))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.V = nn.Parameter(torch.randn(groups, in_features, rank) / math.sqrt(in_features))
        self.A = nn.Parameter(0.02 * torch.randn(groups, rank, rank))

    def orthogonal(self, group: int) -> torch.Tensor:
        """``S_m`` of group ``group``, ``(rank, rank)``."""
        return skew_exponential(self.A[group])

    def dense_weight(self, group: int) -> torch.Tensor:
        """The reconstruction ``U S_m V_m^T`` ``(out, in)``."""
        return self.U @ self.orthogonal(group) @ self.V[group].T

    def forward(self, x: torch.Tensor, group: int = 0) -> torch.Tensor:
        code = F.normalize(x @ self.V[group], dim=-1)
        return F.linear(code, self.U @ self.orthogonal(group), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, groups={self.groups}"


class DenseLinear(nn.Linear):
    """``nn.Linear`` that accepts (and ignores) a modality group, so both kinds plug in alike."""

    def forward(self, x: torch.Tensor, group: int = 0) -> torch.Tensor:
        return super().forward(x)


def make_linear(in_features: int, out_features: int, rank: int | None, groups: int) -> nn.Module:
    return (
        DenseLinear(in_features, out_features)
        if rank is None
        else FactorisedLinear(in_features, out_features, rank, groups)
    )


class SharedTransformerLayer(nn.Module):
    """A post-LN Transformer layer whose six weights are dense or factorised; ``group`` picks ``V_m, S_m``."""

    def __init__(self, config: SharedTransformerConfig):
        super().__init__()
        d, f, r, g = config.dim, config.ffn_dim, config.rank, config.groups
        self.heads = config.heads
        self.q, self.k, self.v, self.attn_out = (make_linear(d, d, r, g) for _ in range(4))
        self.ffn_in, self.ffn_out = make_linear(d, f, r, g), make_linear(f, d, r, g)
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, group: int = 0) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.q(x, group)), split(self.k(x, group)), split(self.v(x, group))
        )
        attended = attended.transpose(1, 2).reshape(b, n, d)
        x = self.norm1(x + self.dropout(self.attn_out(attended, group)))
        return self.norm2(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x, group)), group)))


# ---------------------------------------------------------------------------------------------
# The multimodal model.
# ---------------------------------------------------------------------------------------------


@dataclass
class SharedOutput:
    """What :meth:`SharedMultimodalTransformer.encode` returns.

    ``visual`` and ``audio``: ``(B, T, D)`` the final segment tokens of each modality (from the
    multimodal Transformer in early/mid fusion, from the unimodal ones in late fusion);
    ``summary``: ``(B, 2 D)`` the two summary tokens' final states, concatenated;
    ``unimodal_summary``: ``(B, 2 D)`` the summary tokens' states *before* fusion — the outputs of the
    visual and of the audio Transformer, so each half has seen one modality only (mid and late
    fusion; in late fusion it is ``summary``); ``None`` in early fusion, which has no unimodal
    Transformers.
    """

    visual: torch.Tensor
    audio: torch.Tensor
    summary: torch.Tensor
    unimodal_summary: torch.Tensor | None = None


class SharedMultimodalTransformer(nn.Module):
    """CNN stems + (shared, low-rank) visual / audio / multimodal Transformers in one configurable class.

    Inputs: ``frames`` ``(B, T, 3, H, W)`` (one frame per segment) or ``(B, T, 3, F, H, W)``;
    ``audio`` ``(B, T, C, mel, frames)`` (SynthAVE's 3-channel fbank images: channel 0 is used).
    """

    def __init__(self, config: SharedTransformerConfig = SharedTransformerConfig()):
        super().__init__()
        self.config = config
        d = config.dim
        self.visual_stem, self.audio_stem = VisualStem(config.stems), AudioStem(config.stems)
        self.visual_proj = nn.Sequential(
            nn.Linear(self.visual_stem.out_dim, d), nn.LayerNorm(d, eps=config.layer_norm_eps)
        )
        self.audio_proj = nn.Sequential(
            nn.Linear(self.audio_stem.out_dim, d), nn.LayerNorm(d, eps=config.layer_norm_eps)
        )
        self.summary_tokens = nn.Parameter(0.02 * torch.randn(len(MODALITIES), d))
        self.mask_token = nn.Parameter(0.02 * torch.randn(len(MODALITIES), d))
        self.positions = nn.Parameter(0.02 * torch.randn(config.num_segments + 1, d))
        self.token_types = nn.Parameter(0.02 * torch.randn(len(MODALITIES), d))
        self.layers = nn.ModuleList(SharedTransformerLayer(config) for _ in range(config.num_layers))

    # -- what trains, and what it fits (avpet_core.models.base.TrainableModel) -------------------
    checkpoint_prefix = "model"

    def trained_module(self) -> nn.Module:
        """The whole model: stems and Transformers are trained end to end."""
        return self

    def signature(self) -> dict:
        """The class and its full configuration."""
        return {"model": type(self).__name__, "config": asdict(self.config)}

    def describe_signature(self, signature: dict) -> str:
        config = signature.get("config") or {}
        return (
            f"{signature.get('model')} ({config.get('fusion')} fusion, D={config.get('dim')}, "
            f"depth {config.get('depth')}, rank {config.get('rank')}; config {config})"
        )

    # -- which weights serve which Transformer ---------------------------------------------------

    def layer_for(self, transformer: str, depth: int) -> tuple[SharedTransformerLayer, int]:
        """The layer and modality group that Transformer ``transformer`` uses at ``depth``."""
        c = self.config
        m = c.transformers.index(transformer)
        owner = 0 if c.share_modalities else m
        index = owner * (1 if c.share_layers else c.depth) + (0 if c.share_layers else depth)
        return self.layers[index], (m if c.share_modalities else 0)

    def transformer_parameters(self) -> int:
        """Parameters of the Transformer layers (each shared tensor once) — the table's count."""
        return sum(p.numel() for p in self.layers.parameters())

    def run_transformer(self, name: str, x: torch.Tensor) -> torch.Tensor:
        for depth in range(self.config.depth):
            layer, group = self.layer_for(name, depth)
            x = layer(x, group)
        return x

    # -- inputs ------------------------------------------------------------------------------------

    def embed(self, frames: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment embeddings ``(B, T, D)`` of each modality: CNN stem, then ``Linear -> LayerNorm``."""
        b, t = frames.shape[:2]
        clips = frames.flatten(0, 1)
        clips = clips.unsqueeze(2) if clips.dim() == 4 else clips  # (N, 3, H, W) -> (N, 3, 1, H, W)
        visual = self.visual_proj(self.visual_stem(clips)).view(b, t, -1)
        spectrograms = audio.flatten(0, 1)[:, :1]
        return visual, self.audio_proj(self.audio_stem(spectrograms)).view(b, t, -1)

    def _sequence(self, embeddings: torch.Tensor, modality: int, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = embeddings.shape
        if mask is not None:
            embeddings = torch.where(mask.unsqueeze(-1), self.mask_token[modality].expand_as(embeddings), embeddings)
        bos = self.summary_tokens[modality].expand(b, 1, -1)
        return torch.cat([bos, embeddings], dim=1) + self.positions[: t + 1]

    def encode(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        visual_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
    ) -> SharedOutput:
        """Run the Transformers on segment embeddings ``(B, T, D)``; masked positions get the mask token."""
        t = visual.shape[1]
        v_seq, a_seq = self._sequence(visual, 0, visual_mask), self._sequence(audio, 1, audio_mask)
        fusion = self.config.fusion
        unimodal = None
        if fusion in ("mid", "late"):
            v_seq, a_seq = self.run_transformer("visual", v_seq), self.run_transformer("audio", a_seq)
            unimodal = torch.cat([v_seq[:, 0], a_seq[:, 0]], dim=-1)
        if fusion in ("early", "mid"):
            joint = torch.cat([v_seq + self.token_types[0], a_seq + self.token_types[1]], dim=1)
            if fusion == "mid":  # position ids restart per modality
                joint = joint + torch.cat([self.positions[: t + 1], self.positions[: t + 1]])
            joint = self.run_transformer("multimodal", joint)
            v_seq, a_seq = joint[:, : t + 1], joint[:, t + 1 :]
        return SharedOutput(
            visual=v_seq[:, 1:],
            audio=a_seq[:, 1:],
            summary=torch.cat([v_seq[:, 0], a_seq[:, 0]], dim=-1),
            unimodal_summary=unimodal,
        )

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> SharedOutput:
        return self.encode(*self.embed(frames, audio))


def build_shared_transformer(
    config: SharedTransformerConfig = SharedTransformerConfig(), device=None
) -> SharedMultimodalTransformer:
    """Build the model (on ``device``; ``"meta"`` allocates nothing, for counting)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return SharedMultimodalTransformer(config)


def transformer_parameter_table(base: SharedTransformerConfig = PAPER_TRANSFORMER) -> list[dict]:
    """The five-row table, counted from modules built on the ``meta`` device (nothing is allocated).

    Each row: ``variant``, ``parameters`` (module count of the Transformer layers), ``closed_form``,
    ``reduction`` (fraction saved against the first row), and the row's sharing switches and rank.
    """
    rows = []
    for name, config in sharing_variants(base):
        model = build_shared_transformer(config, device="meta")
        rows.append(
            {
                "variant": name,
                "parameters": model.transformer_parameters(),
                "closed_form": closed_form_transformer_parameters(config),
                "share_layers": config.share_layers,
                "share_modalities": config.share_modalities,
                "rank": config.rank,
            }
        )
    for row in rows:
        row["reduction"] = 1.0 - row["parameters"] / rows[0]["parameters"]
    return rows
