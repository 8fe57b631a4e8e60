"""Procedurally synthesised sounds: a few sound families with controllable nuisance variation.

Used by the spectrogram chapter to show what different sounds look like as images, and to test
whether a frozen *image* ViT already separates them. Each family has a distinct spectro-temporal
shape — horizontal lines (harmonic tones), diagonal lines (chirps), vertical lines (clicks),
broadband blocks (noise bursts) — which is exactly the kind of visual structure an image model
can pick up.

All functions return a 1-D float32 waveform in ``[-1, 1]`` and take a ``torch.Generator`` for their
random choices, so a sound is fully determined by its seed.
"""

from __future__ import annotations

import math

import torch

SOUND_FAMILIES = ("harmonic", "chirp", "clicks", "noise_burst")


def _time(duration: float, sample_rate: int) -> torch.Tensor:
    return torch.arange(int(round(duration * sample_rate)), dtype=torch.float64) / sample_rate


def _rand(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64).item()


def harmonic_tone(
    generator: torch.Generator,
    duration: float = 1.0,
    sample_rate: int = 16_000,
    f0_range: tuple[float, float] = (180.0, 700.0),
) -> torch.Tensor:
    """An instrument-like note: a fundamental with decaying harmonics, vibrato and an attack/decay envelope."""
    t = _time(duration, sample_rate)
    f0 = _rand(generator, *f0_range)
    vibrato = 1.0 + 0.01 * torch.sin(2 * math.pi * _rand(generator, 4.0, 7.0) * t)
    phase = 2 * math.pi * f0 * torch.cumsum(vibrato, 0) / sample_rate
    decay = _rand(generator, 0.5, 0.8)
    wave = sum(decay**k * torch.sin((k + 1) * phase) for k in range(6))
    envelope = (1 - torch.exp(-t / 0.02)) * torch.exp(-t / _rand(generator, 0.6, 2.0))
    return _finish(wave * envelope)


def chirp(generator: torch.Generator, duration: float = 1.0, sample_rate: int = 16_000) -> torch.Tensor:
    """A tone whose pitch sweeps exponentially up or down over the clip (a diagonal line)."""
    t = _time(duration, sample_rate)
    f_start, f_end = _rand(generator, 200.0, 600.0), _rand(generator, 1500.0, 4000.0)
    if torch.rand((), generator=generator) < 0.5:
        f_start, f_end = f_end, f_start
    rate = math.log(f_end / f_start) / duration
    phase = 2 * math.pi * f_start * (torch.exp(rate * t) - 1) / rate
    return _finish(torch.sin(phase) * (1 - torch.exp(-t / 0.01)))


def clicks(generator: torch.Generator, duration: float = 1.0, sample_rate: int = 16_000) -> torch.Tensor:
    """A train of short broadband clicks at a steady rate (vertical lines)."""
    t = _time(duration, sample_rate)
    rate = _rand(generator, 3.0, 9.0)
    offset = _rand(generator, 0.0, 1.0 / rate)
    since = torch.remainder(t - offset, 1.0 / rate)
    noise = torch.randn(t.shape, generator=generator, dtype=torch.float64)
    return _finish(noise * torch.exp(-since / 0.004))


def noise_burst(generator: torch.Generator, duration: float = 1.0, sample_rate: int = 16_000) -> torch.Tensor:
    """Band-limited noise switched on for part of the clip (a broadband block)."""
    t = _time(duration, sample_rate)
    noise = torch.randn(t.shape, generator=generator, dtype=torch.float64)
    # Smooth with a short moving average to tilt the spectrum towards low or mid frequencies.
    width = int(_rand(generator, 1, 6))
    if width > 1:
        noise = torch.nn.functional.avg_pool1d(noise.view(1, 1, -1), width, stride=1, padding=width // 2).view(-1)[
            : t.numel()
        ]
    start = _rand(generator, 0.0, 0.4) * duration
    length = _rand(generator, 0.3, 0.6) * duration
    gate = ((t >= start) & (t < start + length)).double()
    return _finish(noise * gate)


SYNTHESISERS = {"harmonic": harmonic_tone, "chirp": chirp, "clicks": clicks, "noise_burst": noise_burst}


def synthesise(
    family: str,
    generator: torch.Generator,
    duration: float = 1.0,
    sample_rate: int = 16_000,
    snr_db: float | None = None,
) -> torch.Tensor:
    """One sound of ``family`` (see :data:`SOUND_FAMILIES`), optionally with white background noise at ``snr_db``."""
    if family not in SYNTHESISERS:
        raise ValueError(f"unknown sound family {family!r}; choose one of {', '.join(SOUND_FAMILIES)}")
    wave = SYNTHESISERS[family](generator, duration=duration, sample_rate=sample_rate).double()
    if snr_db is not None:
        noise = torch.randn(wave.shape, generator=generator, dtype=torch.float64)
        scale = wave.pow(2).mean().sqrt() / (noise.pow(2).mean().sqrt() * 10 ** (snr_db / 20))
        wave = wave + scale * noise
    return _finish(wave)


def _finish(wave: torch.Tensor) -> torch.Tensor:
    peak = wave.abs().max()
    return (0.9 * wave / peak if peak > 0 else wave).to(torch.float32)
