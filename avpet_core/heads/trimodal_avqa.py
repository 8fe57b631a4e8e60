"""Head for trimodal question answering: the question read by a frozen language encoder, not an LSTM.

Where :class:`~avpet_core.heads.avqa.AVSTHead` encodes the question with its own trainable LSTM,
this head reads what the :class:`~avpet_core.models.trimodal.TrimodalModel` returns for all three
modalities — the question's tokens from the frozen (and, with LSTTA, adapted) language encoder, and
each segment's audio and visual CLS tokens — and keeps AVST's question-guided temporal grounding
and fusion (ours: no spatial grounding and no match loss, so that the rows differ only in what the
encoders' adapters do)::

    q   = tanh(W_q mean_m(Q))                               the question vector (B, h)
    a_t = W_a x^a_cls,t,  v_t = W_v x^v_cls,t               (B, T, h) each
    a*, v* = QuestionGuidedAttention(q, a), (q, v)          the question attends over the T segments
    logits = W_o tanh(W_f tanh([a* ; v*]) * q)              (B, answers)

Interface (every head's, :mod:`avpet_core.heads`)::

    out = head(features, batch)        # features: a TrimodalOutput
    loss = head.loss(out, batch)       # cross-entropy against batch["answer"] (B,)
    predictions = head.predict(out)    # (B,) answer indices
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avpet_core.heads.avqa import QuestionGuidedAttention


@dataclass(frozen=True)
class TrimodalAVQAHeadConfig:
    """Sizes of :class:`TrimodalAVQAHead` (``hidden`` must be divisible by ``heads``)."""

    hidden: int = 512
    heads: int = 4
    dropout: float = 0.1


@dataclass
class TrimodalAVQAOutput:
    """Answer scores and the question's attention over the segments (audio and visual)."""

    answer_logits: torch.Tensor  # (B, answers)
    audio_temporal_weights: torch.Tensor  # (B, T)
    visual_temporal_weights: torch.Tensor  # (B, T)


class TrimodalAVQAHead(nn.Module):
    """Question-guided temporal grounding over the segments, fused with the encoded question."""

    def __init__(
        self, dims: Mapping[str, int], num_answers: int, config: TrimodalAVQAHeadConfig = TrimodalAVQAHeadConfig()
    ):
        super().__init__()
        h = config.hidden
        self.config = config
        self.question_proj = nn.Linear(dims["text"], h)
        self.audio_proj = nn.Linear(dims["audio"], h)
        self.visual_proj = nn.Linear(dims["visual"], h)
        self.audio_temporal = QuestionGuidedAttention(h, config.heads, config.dropout)
        self.visual_temporal = QuestionGuidedAttention(h, config.heads, config.dropout)
        self.fusion = nn.Linear(2 * h, h)
        self.answer = nn.Linear(h, num_answers)

    def forward(self, features, batch: Mapping | None = None) -> TrimodalAVQAOutput:
        mask = features.text_mask.to(features.text_tokens.dtype).unsqueeze(-1)
        question = (features.text_tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        question = torch.tanh(self.question_proj(question))  # (B, h)
        audio, audio_weights = self.audio_temporal(question, self.audio_proj(features.audio_cls))
        visual, visual_weights = self.visual_temporal(question, self.visual_proj(features.visual_cls))
        fused = self.fusion(torch.tanh(torch.cat([audio, visual], dim=-1)))
        return TrimodalAVQAOutput(self.answer(torch.tanh(fused * question)), audio_weights, visual_weights)

    def loss(self, output: TrimodalAVQAOutput, batch) -> torch.Tensor:
        answers = batch["answer"]
        return F.cross_entropy(output.answer_logits, answers.to(output.answer_logits.device).long().flatten())

    def predict(self, output: TrimodalAVQAOutput) -> torch.Tensor:
        return output.answer_logits.argmax(dim=-1)


def build_trimodal_avqa_head(
    dims: Mapping[str, int], sizes: Mapping[str, int], hidden: int | None = None
) -> TrimodalAVQAHead:
    """The registry's builder: ``dims`` the three encoders' widths, ``sizes["num_classes"]`` the answers."""
    config = TrimodalAVQAHeadConfig() if hidden is None else TrimodalAVQAHeadConfig(hidden=hidden)
    return TrimodalAVQAHead(dims, sizes["num_classes"], config)
