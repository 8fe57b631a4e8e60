"""Head for audio-visual question answering (MUSIC-AVQA): one answer per question about a video.

:class:`AVSTHead` is a compact form of AVST, the baseline of MUSIC-AVQA (Li et al., CVPR 2022),
reading what :class:`~avpet_core.models.DualStreamViT` returns for a video of ``T`` segments —
``visual_tokens`` ``(B, T, 1+N, D)`` and ``audio_tokens`` ``(B, T, 1+M, D)`` — together with the
question's token ids. It follows the interface of every head of the book (:mod:`avpet_core.heads`)::

    out = head(features, batch)             # batch["question"] (B, Lq), batch["question_length"] (B,)
    loss = head.loss(out, batch)            # batch["answer"]: (B,) answer indices
    predictions = head.predict(out)         # (B,) answer indices
    accuracy_by_type(predictions == batch["answer"], batch["type"])   # MUSIC-AVQA's Table 2

What is kept from AVST:

* **Question encoder** — word embeddings (``<pad>`` = 0 embeds to zero) and an LSTM over the
  packed sequence, so padding never reaches it; its final state, through ``tanh`` and a linear
  layer, is the question vector ``(B, hidden)``.
* **Audio-guided spatial grounding** — per segment, the cosine similarity between the segment's
  audio vector and each visual patch, a softmax over the patches, and the weighted sum of the
  patches; as in AVST the grounded vector is combined with the un-grounded (here: CLS) visual
  vector through ``Linear(2 hidden -> hidden)`` and ReLU.
* **Question-guided temporal grounding** — multi-head attention with the question vector as the
  single query over the ``T`` segments, once over the audio and once over the grounded visual
  sequence, each followed by AVST's residual feed-forward block and LayerNorm; the mean over the
  segments is added to each attended vector, as in AVST.
* **Fusion** — ``[audio ; visual] -> tanh -> Linear(2 hidden -> hidden)``, elementwise product with
  the question vector, ``tanh``, ``Linear(hidden -> num_answers)``.
* **Audio-visual match loss** — a two-class classifier on ``[audio ; grounded visual]`` per segment;
  positives pair a video's audio with its own frames, negatives with the frames of *another*
  video, grounded by the same audio; ``loss = CE(answer) + match_weight * CE(match)`` with
  ``match_weight = 0.5``.

What is simplified:

* The inputs are the backbone's final tokens: the audio vector of a segment is its projected
  audio CLS (AVST: a VGGish embedding), the visual patches are the projected visual patch tokens
  (AVST: a ResNet-18 feature map), and the un-grounded visual vector is the projected visual CLS
  (AVST: the pooled feature map).
* The negative frames come from the batch itself: sample ``b`` is paired with the frames of sample
  ``b - 1`` (the batch rolled by one; AVST draws a random other video from the data set). A batch
  of one therefore has no negative, and its loss is the answer term alone.
* The match classifier has one hidden layer (AVST: four linear layers); the question LSTM's final
  hidden state alone makes the question vector (AVST concatenates hidden and cell states).
* All widths are one ``hidden`` (AVST: 512 throughout; the default here too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from avpet_core.data.music_avqa import PAD_ID


@dataclass
class AVQAOutput:
    """What :class:`AVSTHead` returns.

    Attributes:
        answer_logits: ``(B, num_answers)`` answer scores.
        match_logits: ``(B, T, 2)`` audio-visual match scores of each segment with its own frames
            (class 1 = "same video").
        negative_match_logits: ``(B, T, 2)`` match scores of each segment's audio with the frames of
            another sample of the batch (the batch rolled by one); ``None`` for a batch of one.
        spatial_weights: ``(B, T, N)`` audio-guided attention over the visual patches.
        audio_temporal_weights: ``(B, T)`` the question's attention over the audio segments.
        visual_temporal_weights: ``(B, T)`` the question's attention over the visual segments.
    """

    answer_logits: torch.Tensor
    match_logits: torch.Tensor
    negative_match_logits: torch.Tensor | None
    spatial_weights: torch.Tensor
    audio_temporal_weights: torch.Tensor
    visual_temporal_weights: torch.Tensor


@dataclass(frozen=True)
class AVQAHeadConfig:
    """Sizes of :class:`AVSTHead` (AVST's are the defaults: 512 wide, 4 attention heads).

    Attributes:
        hidden: width of the question vector and of everything after the projections.
        word_dim: width of the word embeddings.
        heads: attention heads of the temporal grounding (must divide ``hidden``).
        match_weight: weight of the audio-visual match term in the loss.
        dropout: dropout in the temporal grounding blocks.
    """

    hidden: int = 512
    word_dim: int = 512
    heads: int = 4
    match_weight: float = 0.5
    dropout: float = 0.1

    def __post_init__(self):
        if self.hidden <= 0 or self.word_dim <= 0 or self.heads <= 0:
            raise ValueError(f"hidden, word_dim and heads must be positive, got {self}")
        if self.hidden % self.heads:
            raise ValueError(f"heads={self.heads} does not divide hidden={self.hidden}")
        if self.match_weight < 0:
            raise ValueError(f"match_weight must be non-negative, got {self.match_weight}")


class QuestionGuidedAttention(nn.Module):
    """AVST's temporal grounding for one modality: the question attends over the ``T`` segments.

    ``(B, h), (B, T, h) -> (B, h), (B, T)``: multi-head attention (question as query), a residual
    feed-forward block and LayerNorm, plus the sequence's mean over the segments.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, question: torch.Tensor, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(question.unsqueeze(1), sequence, sequence, need_weights=True)
        attended = attended.squeeze(1)  # (B, h)
        attended = self.norm(attended + self.dropout(self.feed_forward(attended)))
        return attended + sequence.mean(dim=1), weights.squeeze(1)  # (B, h), (B, T)


class AVSTHead(nn.Module):
    """Compact AVST: question LSTM, audio-guided spatial and question-guided temporal grounding, match loss.

    Args:
        dim: token width of the backbone (ViT-B: 768).
        vocab_size: number of question tokens, ``<pad>`` (id 0) and ``<unk>`` included
            (``len(vocab.question_tokens)``).
        num_answers: number of answers (MUSIC-AVQA: 42).
        config: widths, heads, match weight and dropout.
    """

    def __init__(self, dim: int, vocab_size: int, num_answers: int, config: AVQAHeadConfig = AVQAHeadConfig()):
        super().__init__()
        if vocab_size <= PAD_ID + 1:
            raise ValueError(f"vocab_size={vocab_size} leaves no word besides <pad>")
        h = config.hidden
        self.config = config
        self.vocab_size = vocab_size
        self.num_answers = num_answers
        # question encoder
        self.word_embedding = nn.Embedding(vocab_size, config.word_dim, padding_idx=PAD_ID)
        self.question_lstm = nn.LSTM(config.word_dim, h, batch_first=True)
        self.question_out = nn.Linear(h, h)
        # projections of the backbone's tokens
        self.audio_proj = nn.Linear(dim, h)
        self.visual_patch_proj = nn.Linear(dim, h)
        self.visual_cls_proj = nn.Linear(dim, h)
        # spatial grounding: [visual CLS ; grounded patches] -> visual vector of the segment
        self.grounded_visual = nn.Linear(2 * h, h)
        # audio-visual match: [audio ; grounded visual] -> {other video, same video}
        self.match_classifier = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 2))
        # temporal grounding
        self.audio_temporal = QuestionGuidedAttention(h, config.heads, config.dropout)
        self.visual_temporal = QuestionGuidedAttention(h, config.heads, config.dropout)
        # fusion and answer
        self.fusion = nn.Linear(2 * h, h)
        self.answer = nn.Linear(h, num_answers)

    # -- pieces ---------------------------------------------------------------------------------
    def encode_question(self, question: torch.Tensor, question_length: torch.Tensor) -> torch.Tensor:
        """``(B, Lq)`` token ids and ``(B,)`` lengths -> ``(B, hidden)``; tokens past a length are never read."""
        words = torch.tanh(self.word_embedding(question))  # (B, Lq, word_dim)
        packed = pack_padded_sequence(words, question_length.detach().cpu(), batch_first=True, enforce_sorted=False)
        _, (final_hidden, _) = self.question_lstm(packed)  # (1, B, h), original order
        return self.question_out(torch.tanh(final_hidden[-1]))

    def ground_visual(self, visual_tokens: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio-guided spatial grounding: ``(B, T, 1+N, D), (B, T, h) -> (B, T, h), (B, T, N)``.

        Cosine similarity of the segment's audio vector with each projected patch, softmax over the
        patches (no temperature, as in AVST), weighted sum; combined with the projected visual CLS.
        """
        patches = self.visual_patch_proj(visual_tokens[..., 1:, :])  # (B, T, N, h)
        similarity = (F.normalize(patches, dim=-1) @ F.normalize(audio, dim=-1).unsqueeze(-1)).squeeze(-1)
        weights = similarity.softmax(dim=-1)  # (B, T, N)
        grounded = (weights.unsqueeze(-1) * patches).sum(dim=-2)  # (B, T, h)
        visual_cls = self.visual_cls_proj(visual_tokens[..., 0, :])  # (B, T, h)
        return F.relu(self.grounded_visual(torch.cat([visual_cls, grounded], dim=-1))), weights

    # -- interface ------------------------------------------------------------------------------
    def forward(self, features, batch: Mapping[str, torch.Tensor]) -> AVQAOutput:
        """Answer scores for ``B`` questions about ``B`` videos.

        Args:
            features: a :class:`~avpet_core.models.DualStreamOutput` with ``visual_tokens``
                ``(B, T, 1+N, D)`` and ``audio_tokens`` ``(B, T, 1+M, D)``.
            batch: ``"question"`` ``(B, Lq)`` int64 token ids padded with ``PAD_ID`` (0) and
                ``"question_length"`` ``(B,)``, the number of real tokens of each, in ``[1, Lq]``.

        The match scores of the negative pairs (each sample's audio with the frames of the sample
        before it in the batch) are computed whenever ``B > 1``.
        """
        visual_tokens, audio_tokens = features.visual_tokens, features.audio_tokens
        question, question_length = self._question(batch)
        self._check_inputs(visual_tokens, audio_tokens, question, question_length)
        question_vector = self.encode_question(question, question_length)  # (B, h)
        audio = self.audio_proj(audio_tokens[..., 0, :])  # (B, T, h)
        visual, spatial_weights = self.ground_visual(visual_tokens, audio)  # (B, T, h), (B, T, N)
        match_logits = self.match_classifier(torch.cat([audio, visual], dim=-1))
        negative_match_logits = None
        if visual_tokens.shape[0] > 1:
            other_visual, _ = self.ground_visual(visual_tokens.roll(1, dims=0), audio)
            negative_match_logits = self.match_classifier(torch.cat([audio, other_visual], dim=-1))
        audio_attended, audio_temporal_weights = self.audio_temporal(question_vector, audio)
        visual_attended, visual_temporal_weights = self.visual_temporal(question_vector, visual)
        fused = self.fusion(torch.tanh(torch.cat([audio_attended, visual_attended], dim=-1)))
        answer_logits = self.answer(torch.tanh(fused * question_vector))
        return AVQAOutput(
            answer_logits=answer_logits,
            match_logits=match_logits,
            negative_match_logits=negative_match_logits,
            spatial_weights=spatial_weights,
            audio_temporal_weights=audio_temporal_weights,
            visual_temporal_weights=visual_temporal_weights,
        )

    def loss_terms(self, output: AVQAOutput, batch) -> dict[str, torch.Tensor]:
        """``{"answer": CE(answer)}``, plus ``"match"`` (CE over positive and negative segments) when ``B > 1``."""
        answers = batch["answer"]
        answers = answers.to(output.answer_logits.device).long().flatten()
        if answers.shape[0] != output.answer_logits.shape[0]:
            raise ValueError(f"{answers.shape[0]} answers for a batch of {output.answer_logits.shape[0]} questions")
        terms = {"answer": F.cross_entropy(output.answer_logits, answers)}
        if output.negative_match_logits is not None:
            positive = output.match_logits.flatten(0, -2)
            negative = output.negative_match_logits.flatten(0, -2)
            targets = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).long().to(positive.device)
            terms["match"] = F.cross_entropy(torch.cat([positive, negative]), targets)
        return terms

    def loss(self, output: AVQAOutput, batch) -> torch.Tensor:
        """``CE(answer) + match_weight * CE(match)``; the match term is skipped for a batch of one.

        ``batch`` is a mapping with ``"answer"`` ``(B,)`` (a MUSIC-AVQA batch) or the answers themselves.
        """
        terms = self.loss_terms(output, batch)
        if "match" not in terms:
            return terms["answer"]
        return terms["answer"] + self.config.match_weight * terms["match"]

    def predict(self, output: AVQAOutput) -> torch.Tensor:
        """``(B,)`` index of the highest-scoring answer."""
        return output.answer_logits.argmax(dim=-1)

    # -- checks ---------------------------------------------------------------------------------
    @staticmethod
    def _question(batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, Mapping) or "question" not in batch or "question_length" not in batch:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(f"the AVST head reads batch['question'] and batch['question_length'], got {got}")
        return batch["question"], batch["question_length"]

    def _check_inputs(self, visual_tokens, audio_tokens, question, question_length) -> None:
        if question.ndim != 2:
            raise ValueError(f"question should be (B, Lq) token ids, got shape {tuple(question.shape)}")
        if question.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"question should hold integer token ids, got {question.dtype}")
        batch, max_length = question.shape
        if question_length.ndim != 1 or question_length.shape[0] != batch:
            raise ValueError(
                f"question_length {tuple(question_length.shape)} does not match the question batch "
                f"{tuple(question.shape)}: expected ({batch},)"
            )
        if batch and (question_length.min() < 1 or question_length.max() > max_length):
            raise ValueError(
                f"question lengths must lie in [1, {max_length}] (the padded question length), "
                f"got {question_length.tolist()}"
            )
        if visual_tokens.ndim != 4 or audio_tokens.ndim != 4:
            raise ValueError(
                f"features should be visual (B, T, 1+N, D) and audio (B, T, 1+M, D) tokens, got "
                f"{tuple(visual_tokens.shape)} and {tuple(audio_tokens.shape)}"
            )
        if visual_tokens.shape[0] != batch or audio_tokens.shape[0] != batch:
            raise ValueError(
                f"batch sizes differ: visual {visual_tokens.shape[0]}, audio {audio_tokens.shape[0]}, question {batch}"
            )
        if visual_tokens.shape[1] != audio_tokens.shape[1]:
            raise ValueError(f"visual has {visual_tokens.shape[1]} segments but audio has {audio_tokens.shape[1]}")
        if visual_tokens.shape[2] < 2:
            raise ValueError("visual tokens hold no patches besides the CLS token; spatial grounding needs patches")
        if question.numel() and (int(question.max()) >= self.vocab_size or int(question.min()) < 0):
            raise ValueError(
                f"question token ids must lie in [0, {self.vocab_size}), "
                f"got [{int(question.min())}, {int(question.max())}]"
            )


def build_avst_head(dim: int, sizes: Mapping[str, int], hidden: int | None = None) -> AVSTHead:
    """The registry's builder: ``sizes["vocab_size"]`` question tokens, ``sizes["num_classes"]`` answers;
    ``hidden`` sets every width (``None``: AVST's 512)."""
    config = AVQAHeadConfig() if hidden is None else AVQAHeadConfig(hidden=hidden, word_dim=hidden)
    return AVSTHead(dim, sizes["vocab_size"], sizes["num_classes"], config)
