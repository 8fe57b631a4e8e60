"""Small CNN stems that turn one segment into one vector, for the multimodal Transformers.

The paper (Lee et al., ICLR 2021) feeds its Transformers with a 3D ResNet over each clip's frames
and a 2D ResNet over each clip's log-mel spectrogram. These stems keep the two shapes — a 3D
convolution stack over a segment's frames ``(3, F, H, W)`` and a 2D convolution stack over its
log-mel ``(1, mel, frames)`` — but not the residual depth: a few strided convolutions with
BatchNorm and ReLU, and an average pool. Widths and the temporal kernel are configuration; the CPU default is tiny,
:data:`PAPER_STEMS` is a wider, deeper stack for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StemConfig:
    """Widths of the two convolution stacks (each layer halves the spatial size).

    Attributes:
        visual_channels: output channels of each 3D convolution (kernel ``(temporal_kernel, 3, 3)``).
        audio_channels: output channels of each 2D convolution over the log-mel (kernel 3).
        temporal_kernel: temporal extent of the 3D kernels; 1 where a segment has one frame
            (SynthAVE), 3 for clips of several frames.
        num_mel_bins: mel bins of the log-mel input (SynthAVE's CPU preset: 64; the paper: 80).
    """

    visual_channels: tuple[int, ...] = (16, 32, 64)
    audio_channels: tuple[int, ...] = (16, 32, 64)
    temporal_kernel: int = 1
    num_mel_bins: int = 64

    def __post_init__(self):
        if not self.visual_channels or not self.audio_channels:
            raise ValueError("a stem needs at least one convolution")
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and positive, got {self.temporal_kernel}")


PAPER_STEMS = StemConfig(
    visual_channels=(64, 128, 256, 512), audio_channels=(64, 128, 256, 512), temporal_kernel=3, num_mel_bins=80
)
"""Wider four-stage stacks (512-d output) for GPU runs at the paper's sizes."""


class VisualStem(nn.Module):
    """3D conv stack: ``(N, 3, F, H, W)`` frames of N segments -> ``(N, C)``."""

    def __init__(self, config: StemConfig = StemConfig()):
        super().__init__()
        layers, channels, kt = [], 3, config.temporal_kernel
        for width in config.visual_channels:
            layers += [
                nn.Conv3d(channels, width, (kt, 3, 3), stride=(1, 2, 2), padding=(kt // 2, 1, 1), bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(),
            ]
            channels = width
        self.net = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips).mean(dim=(2, 3, 4))


class AudioStem(nn.Module):
    """2D conv stack: ``(N, 1, mel, frames)`` log-mel of N segments -> ``(N, C x mel')``.

    The pool averages over time only and keeps the frequency axis (``mel' = mel / 2^stages``), so
    the embedding still knows *where* in the spectrum the energy is — a pitch is a position.
    """

    def __init__(self, config: StemConfig = StemConfig()):
        super().__init__()
        layers, channels = [], 1
        for width in config.audio_channels:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.net = nn.Sequential(*layers)
        bins = config.num_mel_bins
        for _ in config.audio_channels:
            bins = (bins + 1) // 2
        self.out_dim = channels * bins

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        return self.net(spectrograms).mean(dim=3).flatten(1)
