"""The drawing and sound nuisances SynthAVE and SynthAVQA share: :class:`NuisanceConfig`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class NuisanceConfig:
    """How a synthetic video's objects and sounds vary around their class (defaults: SynthAVE's).

    :class:`~avpet_core.data.synthetic.ave.SynthAVEConfig` takes these as its own fields;
    :class:`~avpet_core.data.synthetic.avqa.SynthAVQAConfig` holds one in ``nuisance``.
    """

    # Drawing.
    min_scale: float = 0.20  # object half-size as a fraction of the image side
    max_scale: float = 0.32
    max_rotation_deg: float = 20.0
    position_drift: float = 0.06  # per-segment random-walk step of an object, in image half-widths
    colour_jitter: float = 0.12
    num_clutter: int = 3  # background blobs
    pixel_noise: float = 0.04
    # Sound.
    noise_rms: float = 0.02  # level of the white background noise, to which sources are mixed at their SNR
    pitch_jitter: float = 0.05  # relative; registers are 50 % apart
    tempo_jitter: float = 0.2  # relative
