"""Procedurally generated images for pretraining the micro-ViT offline.

The AV-PEA recipe starts from an image-only ViT (ImageNet-21k supervised) and never shows it audio
during pretraining. Offline we cannot download ImageNet weights, so the book pretrains a small ViT
on images it draws itself. The task is designed to need what a real image backbone learns early:

* **global shape** — four shapes (disc, square, triangle, cross);
* **local texture** — four fills (solid, stripes, checker, dots);

and the label is the pair, so there are ``4 x 4 = 16`` classes. Nuisance variation keeps it from
being solvable by one pixel statistic: random position, scale, small rotation, foreground and
background colours, texture frequency and phase, distractor blobs and pixel noise.

Everything is vectorised over the batch and driven by a ``torch.Generator``, so a batch is fully
determined by its seed and is cheap enough to draw on the fly during training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("disc", "square", "triangle", "cross")
TEXTURES = ("solid", "stripes", "checker", "dots")
CLASS_NAMES = tuple(f"{shape}/{texture}" for shape in SHAPES for texture in TEXTURES)
NUM_CLASSES = len(CLASS_NAMES)


@dataclass(frozen=True)
class ShapesTexturesConfig:
    """How the procedural images are drawn."""

    image_size: int = 48
    min_scale: float = 0.22  # shape half-size as a fraction of the image side
    max_scale: float = 0.40
    max_rotation_deg: float = 20.0
    noise_std: float = 0.06
    num_distractors: int = 2


def _shape_masks(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean masks of every shape at local coordinates ``(x, y)`` in units of the scale.

    Returns a tensor of shape ``(len(SHAPES), *x.shape)``.
    """
    r = torch.sqrt(x**2 + y**2)
    disc = r < 1.0
    square = torch.maximum(x.abs(), y.abs()) < 0.8
    # An upward-pointing triangle with its base at y = 0.7 and apex at y = -0.9.
    triangle = (y < 0.7) & (x.abs() < (y + 0.9) * 0.62)
    cross = ((x.abs() < 0.3) & (y.abs() < 1.0)) | ((y.abs() < 0.3) & (x.abs() < 1.0))
    return torch.stack([disc, square, triangle, cross])


def _texture_masks(x: torch.Tensor, y: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Where each texture shows its second colour; shape ``(len(TEXTURES), *x.shape)``."""
    solid = torch.zeros_like(x, dtype=torch.bool)
    stripes = torch.sin(freq * x + phase) > 0
    checker = (torch.sin(freq * x + phase) > 0) ^ (torch.sin(freq * y + phase) > 0)
    dots = (torch.sin(freq * x + phase) * torch.sin(freq * y + phase)) > 0.45
    return torch.stack([solid, stripes, checker, dots])


def draw_shapes_textures(
    num_images: int,
    generator: torch.Generator,
    config: ShapesTexturesConfig = ShapesTexturesConfig(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_images`` labelled images.

    Returns ``(images, labels)``: images ``(N, 3, S, S)`` with values in ``[0, 1]`` and labels
    ``(N,)`` in ``[0, NUM_CLASSES)``, label ``= shape_index * len(TEXTURES) + texture_index``.
    """
    n, s, g = num_images, config.image_size, generator

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    shape_idx, texture_idx = labels // len(TEXTURES), labels % len(TEXTURES)

    # Pixel grid in [-1, 1], then each image's local frame: translate, rotate, scale.
    coords = torch.linspace(-1.0, 1.0, s)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    scale = uniform(config.min_scale, config.max_scale, 1, 1) * 2.0
    margin = 1.0 - scale
    cx, cy = uniform(-1.0, 1.0, 1, 1) * margin, uniform(-1.0, 1.0, 1, 1) * margin
    theta = uniform(-1.0, 1.0, 1, 1) * math.radians(config.max_rotation_deg)
    dx, dy = gx - cx, gy - cy
    lx = (torch.cos(theta) * dx + torch.sin(theta) * dy) / scale
    ly = (-torch.sin(theta) * dx + torch.cos(theta) * dy) / scale

    rows = torch.arange(n)
    shape_mask = _shape_masks(lx, ly)[shape_idx, rows]  # (N, S, S)
    freq = uniform(5.0, 9.0, 1, 1)
    phase = uniform(0.0, 2 * math.pi, 1, 1)
    texture_mask = _texture_masks(lx, ly, freq, phase)[texture_idx, rows]

    # Colours: background, foreground far enough from it, and a second texture colour.
    background = uniform(0.0, 1.0, 3, 1, 1)
    foreground = torch.where(background.mean(1, keepdim=True) > 0.5, uniform(0.0, 0.35, 3, 1, 1), uniform(0.65, 1.0, 3, 1, 1))
    second = torch.where(foreground < 0.5, foreground + 0.3, foreground - 0.3)

    images = background.expand(n, 3, s, s).clone()
    # Distractors: small squares of random colour that never carry the label.
    for _ in range(config.num_distractors):
        ox, oy = uniform(-0.9, 0.9, 1, 1), uniform(-0.9, 0.9, 1, 1)
        half = uniform(0.04, 0.09, 1, 1)
        blob = ((gx - ox).abs() < half) & ((gy - oy).abs() < half)
        images = torch.where(blob.unsqueeze(1), uniform(0.0, 1.0, 3, 1, 1), images)
    fill = torch.where(texture_mask.unsqueeze(1), second, foreground)
    images = torch.where(shape_mask.unsqueeze(1), fill, images)
    images = images + config.noise_std * torch.randn(images.shape, generator=g)
    return images.clamp(0.0, 1.0), labels
