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

from avpet_core.data.synthetic.drawing import (
    SHAPES,
    TEXTURES,
    local_coordinates,
    pixel_grid,
    shape_masks,
    square_mask,
    texture_masks,
)

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
    gx, gy = pixel_grid(s)
    scale = uniform(config.min_scale, config.max_scale, 1, 1) * 2.0
    margin = 1.0 - scale
    cx, cy = uniform(-1.0, 1.0, 1, 1) * margin, uniform(-1.0, 1.0, 1, 1) * margin
    theta = uniform(-1.0, 1.0, 1, 1) * math.radians(config.max_rotation_deg)
    lx, ly = local_coordinates(gx, gy, cx, cy, scale, theta)

    rows = torch.arange(n)
    shape_mask = shape_masks(lx, ly)[shape_idx, rows]  # (N, S, S)
    freq = uniform(5.0, 9.0, 1, 1)
    phase = uniform(0.0, 2 * math.pi, 1, 1)
    texture_mask = texture_masks(lx, ly, freq, phase)[texture_idx, rows]

    # Colours: background, foreground far enough from it, and a second texture colour.
    background = uniform(0.0, 1.0, 3, 1, 1)
    dark, light = uniform(0.0, 0.35, 3, 1, 1), uniform(0.65, 1.0, 3, 1, 1)
    foreground = torch.where(background.mean(1, keepdim=True) > 0.5, dark, light)
    second = torch.where(foreground < 0.5, foreground + 0.3, foreground - 0.3)

    images = background.expand(n, 3, s, s).clone()
    # Distractors: small squares of random colour that never carry the label.
    for _ in range(config.num_distractors):
        ox, oy = uniform(-0.9, 0.9, 1, 1), uniform(-0.9, 0.9, 1, 1)
        half = uniform(0.04, 0.09, 1, 1)
        blob = square_mask(gx, gy, ox, oy, half)
        images = torch.where(blob.unsqueeze(1), uniform(0.0, 1.0, 3, 1, 1), images)
    fill = torch.where(texture_mask.unsqueeze(1), second, foreground)
    images = torch.where(shape_mask.unsqueeze(1), fill, images)
    images = images + config.noise_std * torch.randn(images.shape, generator=g)
    return images.clamp(0.0, 1.0), labels
