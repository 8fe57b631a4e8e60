"""Head for video classification: one label per video from a model's summary tokens.

The shared low-rank multimodal Transformer (:mod:`avpet_core.models.shared_lowrank`) ends in one
summary token per modality; fine-tuning and its evaluation put a linear classifier on the two,
side by side (``(B, 2 D)``). The interface is every head's (:mod:`avpet_core.heads`)::

    out = head(features, batch)          # features: a SharedOutput; out: (B, C) logits
    loss = head.loss(out, batch)         # cross-entropy against batch["labels"] (B,)
    predictions = head.predict(out)      # (B,)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class VideoClassHead(nn.Linear):
    """``Linear(summary -> classes)`` on ``features.summary`` (an ``nn.Linear``: same weights, same init)."""

    def forward(self, features, batch: Mapping | None = None) -> torch.Tensor:
        return super().forward(features.summary)

    def loss(self, output: torch.Tensor, batch) -> torch.Tensor:
        return F.cross_entropy(output, batch["labels"])

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(dim=-1)


def build_video_class_head(dim: int, sizes: Mapping[str, int], hidden: int | None = None) -> VideoClassHead:
    """The registry's builder: ``dim`` is the summary's width, ``sizes["num_classes"]`` the labels."""
    return VideoClassHead(dim, sizes["num_classes"])
