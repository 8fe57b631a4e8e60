"""Heads for audio-visual event localisation (AVE): one label per one-second segment.

Both heads read what :class:`~avpet_core.models.DualStreamViT` returns for a video of ``T``
segments — ``visual_tokens`` ``(B, T, 1+N, D)`` and ``audio_tokens`` ``(B, T, 1+M, D)`` — and share
the interface of every head of the book (:mod:`avpet_core.heads`)::

    out = head(features, batch)          # features: a DualStreamOutput; the AVEL heads read no batch key
    loss = head.loss(out, batch)         # batch["labels"] (or the labels): (B, T) in [0, C], background = C
    predictions = head.predict(out)      # (B, T) in [0, C]

* :class:`SegmentClassifier` — LAVISH's public AVE head: the final audio CLS and visual CLS of each
  segment are concatenated and classified independently, ``Linear(2D -> 512) -> Linear(512 -> C+1)``.
  We train it with cross-entropy (LAVISH applies a binary cross-entropy to the softmax of the
  one-hot target; the two agree on the argmax and cross-entropy is the standard form).
* :class:`CMBSHead` — a compact head in the spirit of CMBS (Xia & Zhao, CVPR 2022), the head of
  AV-PEA's Tables 1 and 4: audio-guided attention over the visual patches, a bidirectional LSTM per
  modality over the segments, cross-modal attention between the two sequences, and *background
  suppression*: a per-segment "is this an event" logit and one video-level event class. A segment
  is predicted as the video's class where its event probability exceeds 0.5, else background.
  It keeps CMBS's decision structure at a fraction of its size; it is not a line-by-line CMBS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def batch_segment_labels(batch) -> torch.Tensor:
    """The ``(B, T)`` segment labels of a batch (its ``"labels"``)."""
    return batch["labels"]


@dataclass
class AVELOutput:
    """What an AVEL head returns.

    Attributes:
        segment_logits: ``(B, T, C+1)`` class scores per segment (background last). For the CMBS
            head these are the log-probabilities implied by its event gate and video class.
        event_logits: ``(B, T)`` "is an event" logits (CMBS head only).
        class_logits: ``(B, C)`` video-level event-class logits (CMBS head only).
    """

    segment_logits: torch.Tensor
    event_logits: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None


class SegmentClassifier(nn.Module):
    """LAVISH's AVE head: per segment, ``[visual CLS ; audio CLS] -> Linear(2D, 512) -> Linear(512, C+1)``."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 512):
        super().__init__()
        self.num_classes = num_classes  # including background
        self.hidden = nn.Linear(2 * dim, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, features, batch: Mapping | None = None) -> AVELOutput:
        pair = torch.cat([features.visual_cls, features.audio_cls], dim=-1)
        return AVELOutput(segment_logits=self.out(self.hidden(pair)))

    def loss(self, output: AVELOutput, batch) -> torch.Tensor:
        return F.cross_entropy(output.segment_logits.flatten(0, -2), batch_segment_labels(batch).flatten())

    def predict(self, output: AVELOutput) -> torch.Tensor:
        return output.segment_logits.argmax(dim=-1)


@dataclass(frozen=True)
class CMBSHeadConfig:
    """Sizes of :class:`CMBSHead`; ``hidden`` is the width of everything after the projections."""

    hidden: int = 128
    heads: int = 4
    dropout: float = 0.1


class CMBSHead(nn.Module):
    """Compact CMBS-style head: guided attention, temporal encoders, cross-modal attention, background suppression.

    Args:
        dim: token width of the backbone.
        num_classes: number of labels *including* background (AVE: 29; background is the last).
    """

    def __init__(self, dim: int, num_classes: int, config: CMBSHeadConfig = CMBSHeadConfig()):
        super().__init__()
        h = config.hidden
        self.num_classes = num_classes
        self.config = config
        # audio-guided visual attention: the segment's audio CLS queries its visual patches
        self.guide_query = nn.Linear(dim, h)
        self.guide_key = nn.Linear(dim, h)
        self.visual_proj = nn.Linear(dim, h)
        self.audio_proj = nn.Linear(dim, h)
        # temporal encoders over the T segments (bidirectional: h/2 per direction)
        self.visual_lstm = nn.LSTM(h, h // 2, batch_first=True, bidirectional=True)
        self.audio_lstm = nn.LSTM(h, h // 2, batch_first=True, bidirectional=True)
        # cross-modal attention: each sequence reads the other
        self.visual_reads_audio = nn.MultiheadAttention(h, config.heads, dropout=config.dropout, batch_first=True)
        self.audio_reads_visual = nn.MultiheadAttention(h, config.heads, dropout=config.dropout, batch_first=True)
        self.visual_norm = nn.LayerNorm(h)
        self.audio_norm = nn.LayerNorm(h)
        # background suppression: per-segment event gate, one video-level class
        self.event = nn.Linear(2 * h, 1)
        self.video_class = nn.Linear(2 * h, num_classes - 1)

    def guided_visual(self, visual_patches: torch.Tensor, audio_cls: torch.Tensor) -> torch.Tensor:
        """``(B, T, N, D), (B, T, D) -> (B, T, h)``: visual patches weighted by their match with the audio."""
        q = self.guide_query(audio_cls).unsqueeze(-2)  # (B, T, 1, h)
        k = self.guide_key(visual_patches)  # (B, T, N, h)
        weights = torch.softmax((q * k).sum(-1) / k.shape[-1] ** 0.5, -1)  # (B, T, N)
        return self.visual_proj((weights.unsqueeze(-1) * visual_patches).sum(-2))

    def forward(self, features, batch: Mapping | None = None) -> AVELOutput:
        visual = self.guided_visual(features.visual_tokens[..., 1:, :], features.audio_cls)
        audio = self.audio_proj(features.audio_cls)
        visual, _ = self.visual_lstm(visual)
        audio, _ = self.audio_lstm(audio)
        visual = self.visual_norm(visual + self.visual_reads_audio(visual, audio, audio, need_weights=False)[0])
        audio = self.audio_norm(audio + self.audio_reads_visual(audio, visual, visual, need_weights=False)[0])
        fused = torch.cat([visual, audio], dim=-1)  # (B, T, 2h)
        event_logits = self.event(fused).squeeze(-1)  # (B, T)
        class_logits = self.video_class(fused.mean(dim=1))  # (B, C)
        # log p(segment = c) = log p(event) + log p(class c);  log p(background) = log p(no event)
        log_event = F.logsigmoid(event_logits).unsqueeze(-1) + F.log_softmax(class_logits, -1).unsqueeze(1)
        log_background = F.logsigmoid(-event_logits).unsqueeze(-1)
        segment_logits = torch.cat([log_event, log_background], dim=-1)
        return AVELOutput(segment_logits=segment_logits, event_logits=event_logits, class_logits=class_logits)

    def loss(self, output: AVELOutput, batch) -> torch.Tensor:
        """BCE on the event gate of every segment + CE on the video class (videos with an event)."""
        labels = batch_segment_labels(batch)
        background = self.num_classes - 1
        is_event = labels != background
        event_loss = F.binary_cross_entropy_with_logits(output.event_logits, is_event.float())
        has_event = is_event.any(dim=1)
        if not has_event.any():
            return event_loss
        # the video's class: its event segments' label (one class per video, as in AVE)
        video_class = torch.where(is_event, labels, labels.new_full((), -1)).amax(dim=1)
        class_loss = F.cross_entropy(output.class_logits[has_event], video_class[has_event])
        return event_loss + class_loss

    def predict(self, output: AVELOutput) -> torch.Tensor:
        """The video's class where ``p(event) > 0.5``, else background."""
        video_class = output.class_logits.argmax(dim=-1, keepdim=True).expand_as(output.event_logits)
        background = torch.full_like(video_class, self.num_classes - 1)
        return torch.where(output.event_logits > 0, video_class, background)


def build_cmbs_head(dim: int, sizes: Mapping[str, int], hidden: int | None = None) -> CMBSHead:
    """The registry's builder (:data:`avpet_core.heads.HEADS`): ``sizes["num_classes"]``, width ``hidden``."""
    config = CMBSHeadConfig() if hidden is None else CMBSHeadConfig(hidden=hidden)
    return CMBSHead(dim, sizes["num_classes"], config)


def build_segment_classifier(dim: int, sizes: Mapping[str, int], hidden: int | None = None) -> SegmentClassifier:
    """The registry's builder: LAVISH's head keeps its own width (512) whatever ``hidden`` says."""
    return SegmentClassifier(dim, sizes["num_classes"])
