"""Sound for SynthAVE and SynthAVQA: the sound sources and pitch registers of the classes, their
synthesis (:func:`synthesise_class_sound`), and the filterbank presets both datasets' audio is
read with (:data:`SYNTH_FBANK_MICRO`, :data:`SYNTH_FBANK_VITB`).
"""

from __future__ import annotations

import math

import torch

from avpet_core.audio import FbankConfig
from avpet_core.data.synthetic.nuisance import NuisanceConfig
from avpet_core.data.synthetic.seeds import uniform

SAMPLE_RATE = 16_000
SOUND_SOURCES = ("tone", "sweep", "pips", "noise_band")
REGISTERS_HZ = tuple(220.0 * 1.5**r for r in range(7))  # 220 Hz ... 2.5 kHz, a fifth apart
BASE_TEMPO = {"tone": 2.0, "sweep": 1.5, "pips": 6.0, "noise_band": 3.0}  # events per second

# ---------------------------------------------------------------------------------------------
# Filterbank presets. A 1 s segment gives 98 frames of 10 ms; 96 keeps the spectrogram a whole
# number of patches for both backbones (96 = 12 x 8 = 6 x 16), dropping the last 20 ms.
# ---------------------------------------------------------------------------------------------

SYNTH_FBANK_MICRO = FbankConfig(num_mel_bins=64, target_frames=96, mean=-2.93, std=3.09)
"""SynthAVE/SynthAVQA audio for the micro-ViT: 64 mel bins x 96 frames (one second, cropped from 98).

With 8 x 8 patches that is an 8 x 12 grid = 96 audio tokens per segment (beside 36 image tokens),
the smaller of the two sizes that tile exactly (128 x 96 would be 192 tokens for no gain on these
sounds, whose structure is coarse in frequency). The normalisation statistics are SynthAVE's own,
estimated with :func:`~avpet_core.data.synthetic.ave.estimate_fbank_stats` on 200 train videos of
the default config (a test re-estimates them from other videos).
"""

SYNTH_FBANK_VITB = FbankConfig(num_mel_bins=128, target_frames=96, mean=-3.94, std=3.41)
"""SynthAVE/SynthAVQA audio for ViT-B/16: 128 mel bins x 96 frames = 8 x 6 = 48 patches of 16 x 16,
with SynthAVE's own statistics for 128 bins."""

# ---------------------------------------------------------------------------------------------
# Synthesis.
# ---------------------------------------------------------------------------------------------


def synthesise_class_sound(spec, gate: torch.Tensor, config: NuisanceConfig, g: torch.Generator) -> torch.Tensor:
    """The sound of ``spec`` (a :class:`~avpet_core.data.synthetic.classes.ClassSpec`: its source
    and pitch) over the whole clip, switched on where ``gate`` ``(T,)`` is true.

    Returns a float32 waveform of ``T`` seconds at 16 kHz, scaled to unit RMS over its sounding
    part (zero if it never sounds). Pitch (``pitch_jitter``) and tempo (``tempo_jitter``) vary per
    call; switching on and off uses 10 ms ramps. Phases are computed in float64 as whole cycles
    and wrapped before the float32 ``sin``, which keeps a ten-second tone exact and fast.
    """
    steps = gate.numel()
    n = steps * SAMPLE_RATE
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    pitch = spec.pitch_hz * (1 + config.pitch_jitter * uniform(g, -1.0, 1.0).item())
    tempo = BASE_TEMPO[spec.sound] * (1 + config.tempo_jitter * uniform(g, -1.0, 1.0).item())
    period = 1.0 / tempo
    shifted = t + uniform(g, 0.0, period).item()
    local = torch.remainder(shifted, period).float()  # seconds since the last onset
    two_pi = 2 * math.pi

    if spec.sound == "tone":  # notes: a fundamental and three decaying harmonics, each note decays
        cycles = _wrapped_cycles(pitch * t)
        wave = sum(0.6**h * torch.sin(two_pi * torch.frac((h + 1) * cycles)) for h in range(4))
        wave = wave * torch.exp(-local / (0.35 * period)) * (1 - torch.exp(-local / 0.005))
    elif spec.sound == "sweep":  # an octave glide up every period: f = pitch * 2 ** (local / period)
        per_glide = pitch * period / math.log(2.0)  # cycles in one glide
        cycles = per_glide * (torch.floor(shifted / period) + torch.pow(2.0, local.double() / period) - 1.0)
        wave = torch.sin(two_pi * _wrapped_cycles(cycles))
    elif spec.sound == "pips":  # short tone pips, fast decay
        wave = torch.sin(two_pi * _wrapped_cycles(pitch * t)) * torch.exp(-local / 0.02)
    else:  # noise_band: noise band-passed to +-20 % around the pitch, with a tremolo at the tempo
        spectrum = torch.fft.rfft(torch.randn(n, generator=g))
        freqs = torch.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        spectrum = spectrum * ((freqs - pitch).abs() < 0.2 * pitch)
        wave = torch.fft.irfft(spectrum, n) * (0.6 + 0.4 * torch.sin(two_pi * _wrapped_cycles(tempo * t)))
    # On/off with 10 ms linear ramps: a moving average of the gate, via a cumulative sum.
    on = gate.float().repeat_interleave(SAMPLE_RATE)
    if not bool(gate.any()):
        return torch.zeros(n, dtype=torch.float32)
    width = 161
    summed = torch.cumsum(torch.nn.functional.pad(on.double(), (width // 2 + 1, width // 2)), 0)
    ramp = ((summed[width:] - summed[:-width]) / width).float()
    wave = wave * ramp
    rms = wave[on > 0].pow(2).mean().sqrt()
    return wave / rms.clamp_min(1e-12)


def _wrapped_cycles(cycles: torch.Tensor) -> torch.Tensor:
    """The fractional part of a float64 cycle count, as float32 (the phase in cycles)."""
    return torch.frac(cycles).float()
