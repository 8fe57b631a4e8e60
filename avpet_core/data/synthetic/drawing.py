"""Image drawing for the procedural data sets, vectorised over images or segments.

* Primitives, shared by SynthAVE, SynthAVQA and :mod:`avpet_core.data.procedural_images`: the
  shapes (:data:`SHAPES`) and fill textures (:data:`TEXTURES`) as boolean masks in an object's
  local coordinates, the pixel grid, the rotation and scaling into local coordinates, and the
  square and disc blobs of clutter.
* Video frames, shared by SynthAVE and SynthAVQA: a greyish background with drifting clutter
  (:func:`background_frames`), a class's object in its palette (:func:`draw_object`; the palettes
  are :data:`PALETTES`) and pixel noise with ``uint8`` quantisation (:func:`finish_frames`).

Coordinates run over ``[-1, 1]`` across the image; random draws come from the caller's generator.
"""

from __future__ import annotations

import math

import torch

from avpet_core.data.synthetic.nuisance import NuisanceConfig
from avpet_core.data.synthetic.seeds import uniform

SHAPES = ("disc", "square", "triangle", "cross")
TEXTURES = ("solid", "stripes", "checker", "dots")
PALETTES = ("warm", "cool")
PALETTE_RGB = ((0.90, 0.45, 0.12), (0.15, 0.55, 0.90))

# ---------------------------------------------------------------------------------------------
# Primitives.
# ---------------------------------------------------------------------------------------------


def pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gx, gy)``, each ``(size, size)``: every pixel's x and y in ``[-1, 1]`` (y grows downwards)."""
    coords = torch.linspace(-1.0, 1.0, size)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    return gx, gy


def local_coordinates(gx, gy, cx, cy, scale, theta) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates in an object's frame: centred on ``(cx, cy)``, rotated by ``theta``, in units of ``scale``."""
    dx, dy = gx - cx, gy - cy
    lx = (torch.cos(theta) * dx + torch.sin(theta) * dy) / scale
    ly = (-torch.sin(theta) * dx + torch.cos(theta) * dy) / scale
    return lx, ly


def shape_masks(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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


def texture_masks(x: torch.Tensor, y: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Where each texture shows its second colour; shape ``(len(TEXTURES), *x.shape)``."""
    solid = torch.zeros_like(x, dtype=torch.bool)
    stripes = torch.sin(freq * x + phase) > 0
    checker = (torch.sin(freq * x + phase) > 0) ^ (torch.sin(freq * y + phase) > 0)
    dots = (torch.sin(freq * x + phase) * torch.sin(freq * y + phase)) > 0.45
    return torch.stack([solid, stripes, checker, dots])


def square_mask(gx, gy, ox, oy, half) -> torch.Tensor:
    """Pixels of the axis-aligned square of half-side ``half`` centred on ``(ox, oy)``."""
    return ((gx - ox).abs() < half) & ((gy - oy).abs() < half)


def disc_mask(gx, gy, ox, oy, radius) -> torch.Tensor:
    """Pixels of the disc of ``radius`` centred on ``(ox, oy)``."""
    return (gx - ox) ** 2 + (gy - oy) ** 2 < radius**2


# ---------------------------------------------------------------------------------------------
# Frames of SynthAVE and SynthAVQA videos, ``(T, 3, S, S)`` with one frame per segment.
# ---------------------------------------------------------------------------------------------


def background_frames(steps: int, size: int, clutter: int, g: torch.Generator) -> torch.Tensor:
    """Frames ``(T, 3, S, S)`` of a greyish background with ``clutter`` drifting blobs."""
    gx, gy = pixel_grid(size)
    grey = uniform(g, 0.15, 0.85).item()
    base = (grey + uniform(g, -0.08, 0.08, 3)).clamp(0, 1).view(1, 3, 1, 1)
    frames = (base + uniform(g, -0.03, 0.03, steps, 1, 1, 1)).expand(steps, 3, size, size).clone()
    for _ in range(clutter):
        ox = (uniform(g, -0.85, 0.85) + torch.cumsum(uniform(g, -0.05, 0.05, steps), 0)).view(steps, 1, 1)
        oy = (uniform(g, -0.85, 0.85) + torch.cumsum(uniform(g, -0.05, 0.05, steps), 0)).view(steps, 1, 1)
        half = uniform(g, 0.05, 0.12).item()
        square = bool(torch.rand((), generator=g) < 0.5)
        blob = (square_mask if square else disc_mask)(gx, gy, ox, oy, half)
        frames = torch.where(blob.unsqueeze(1), uniform(g, 0.0, 1.0, 3).view(1, 3, 1, 1), frames)
    return frames


def _object_masks(spec, gx, gy, cx, cy, scale, theta, g) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and texture masks ``(T, S, S)`` of a class's object at per-segment centres/scales ``(T, 1, 1)``."""
    lx, ly = local_coordinates(gx, gy, cx, cy, scale, theta)
    freq, phase = uniform(g, 5.0, 9.0).item(), uniform(g, 0.0, 2 * math.pi).item()
    shape = shape_masks(lx, ly)[SHAPES.index(spec.shape)]
    texture = texture_masks(lx, ly, torch.tensor(freq), torch.tensor(phase))[TEXTURES.index(spec.texture)]
    return shape, texture


def _object_colours(palette: str, jitter: float, g) -> tuple[torch.Tensor, torch.Tensor]:
    """The fill colour (the palette's, jittered) and the texture's second colour, each ``(3, 1, 1)``."""
    fill = (torch.tensor(PALETTE_RGB[PALETTES.index(palette)]) + uniform(g, -jitter, jitter, 3)).clamp(0, 1)
    second = torch.where(fill < 0.5, fill + 0.35, fill - 0.35)
    return fill.view(3, 1, 1), second.view(3, 1, 1)


def draw_object(
    frames: torch.Tensor, spec, present: torch.Tensor, cx, cy, scale, theta, config: NuisanceConfig, g: torch.Generator
) -> torch.Tensor:
    """Paint the object of ``spec`` (a :class:`~avpet_core.data.synthetic.classes.ClassSpec`: its
    shape, texture and palette) into ``frames`` ``(T, 3, S, S)`` where ``present`` ``(T,)`` is true.

    ``cx``, ``cy``, ``scale`` and ``theta`` are per-segment ``(T, 1, 1)``; the texture's frequency
    and phase and the colour jitter (``config.colour_jitter``) are drawn once per call.
    """
    gx, gy = pixel_grid(frames.shape[-1])
    shape, texture = _object_masks(spec, gx, gy, cx, cy, scale, theta, g)
    fill, second = _object_colours(spec.palette, config.colour_jitter, g)
    paint = torch.where(texture.unsqueeze(1), second, fill)
    where = (shape & present.view(-1, 1, 1)).unsqueeze(1)
    return torch.where(where, paint, frames)


def finish_frames(frames: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
    """Add pixel noise and quantise to ``uint8`` like a decoded video frame."""
    frames = frames + noise * torch.randn(frames.shape, generator=g)
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)
