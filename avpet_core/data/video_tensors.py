"""A SynthAVE split held in memory as stacked tensors, one label per video (chapter 8).

:func:`load_videos` renders the first videos of a split once and stacks them
(:class:`VideoTensors`); the video label is the event class of the video if any of its segments is
an event, else background (SynthAVE's last label, so ``labels.min()`` over the segments). Items are
what the training loop reads for video classification (``labels`` is the video label); the
pretraining study (:mod:`avpet_core.pretraining`) and the ``video-classification`` task read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig


@dataclass(frozen=True)
class VideoTensors:
    """A SynthAVE split as tensors: ``frames`` ``(N, T, 3, S, S)``, ``audio`` ``(N, T, 1, mel, frames)``,
    segment ``labels`` ``(N, T)`` and the video label ``video_labels`` ``(N,)``."""

    frames: torch.Tensor
    audio: torch.Tensor
    labels: torch.Tensor
    video_labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One video as the training loop reads it; ``labels`` is the video label."""
        return {"frames": self.frames[index], "audio": self.audio[index], "labels": self.video_labels[index]}

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frames[index], self.audio[index]


def load_videos(config: SynthAVEConfig, split: str, count: int | None = None) -> VideoTensors:
    """The first ``count`` videos of a SynthAVE split (all by default) stacked into tensors."""
    dataset = SynthAVE(config, split)
    items = [dataset[i] for i in range(len(dataset) if count is None else min(count, len(dataset)))]
    labels = torch.stack([item["labels"] for item in items])
    return VideoTensors(
        frames=torch.stack([item["frames"] for item in items]),
        audio=torch.stack([item["audio"][:, :1] for item in items]),
        labels=labels,
        video_labels=labels.min(dim=1).values,
        num_classes=dataset.num_classes,
    )
