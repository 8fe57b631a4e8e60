"""Waveform -> normalised log-mel filterbank "image" for a frozen image ViT.

The audio front end of AST (Gong et al., 2021), which LAVISH and AV-PEA reuse:

1. 16 kHz mono waveform, mean-subtracted (resampled and down-mixed here if it is not);
2. Kaldi-compatible log-mel filterbank — 128 mel bins, 25 ms Hanning windows every 10 ms, no
   dither, no energy term (``torchaudio.compliance.kaldi.fbank``) — giving ``(frames, 128)``;
3. zero-padded or cropped at the end to a fixed number of frames;
4. normalised as ``(fbank - mean) / (2 * std)`` with dataset statistics (AudioSet's by default).

The spectrogram is then laid out as an image — frequency as rows (low frequencies at the bottom
when drawn with ``origin="lower"``), time as columns — and repeated to three channels so the ViT's
RGB patch embedding can read it (:func:`fbank_to_image`).

Bad input raises :class:`AudioInputError`, whose message names the source (a file name, when the
caller passes one) and what is wrong.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
"""Fbank statistics over AudioSet used by AST."""

MAX_CHANNELS = 8
"""More 'channels' than this in a 2-D waveform almost surely means a ``(time, channels)`` array."""


class AudioInputError(ValueError):
    """Audio that the front end cannot turn into a spectrogram (empty, NaN, too short, ...)."""


@dataclass(frozen=True)
class FbankConfig:
    """Settings of the filterbank front end (defaults: AST on AudioSet, 10.24 s clips)."""

    sample_rate: int = 16_000
    num_mel_bins: int = 128
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    target_frames: int | None = 1024  # None keeps every frame
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD

    @property
    def min_samples(self) -> int:
        """Samples needed for one analysis window."""
        return int(round(self.sample_rate * self.frame_length_ms / 1000.0))


AST_AUDIOSET = FbankConfig()
"""AST's AudioSet setting: 1024 frames (10.24 s), AudioSet statistics."""

LAVISH_AVE_1S = FbankConfig(target_frames=102, mean=-4.1426, std=3.2001)
"""LAVISH's AVE ViT setting: one-second windows, 102 frames, AVE statistics."""


def _name(source: str | Path | None) -> str:
    return str(source) if source is not None else "waveform"


def prepare_waveform(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    target_rate: int = 16_000,
    min_samples: int = 0,
    source: str | Path | None = None,
) -> torch.Tensor:
    """Check, down-mix and resample a waveform; returns a 1-D float32 tensor at ``target_rate``.

    Args:
        waveform: ``(samples,)`` or channels-first ``(channels, samples)``; stereo (or more
            channels) is averaged to mono.
        sample_rate: the waveform's rate in Hz; resampled with ``torchaudio.functional.resample``
            when it differs from ``target_rate``.
        min_samples: the minimum length *after* resampling.
        source: the file (or any label) the audio came from, quoted in error messages.

    Raises:
        AudioInputError: empty, NaN/inf samples (a common way to get them: peak-normalising a
            silent clip, 0 / 0), a ``(samples, channels)`` array, a bad sample rate, or too short.
    """
    where = _name(source)
    if isinstance(waveform, np.ndarray):
        if waveform.dtype.kind not in "fiu":
            raise AudioInputError(f"{where}: expected numeric samples, got a numpy array of dtype {waveform.dtype}")
        native = waveform.dtype.newbyteorder("=")  # torch reads native byte order only
        waveform = torch.from_numpy(np.ascontiguousarray(waveform, dtype=native))
    if not isinstance(waveform, torch.Tensor):
        raise AudioInputError(f"{where}: expected a tensor or numpy array, got {type(waveform).__name__}")
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise AudioInputError(f"{where}: sample rate must be a positive integer in Hz, got {sample_rate!r}")
    if waveform.ndim not in (1, 2):
        raise AudioInputError(f"{where}: expected shape (samples,) or (channels, samples), got {tuple(waveform.shape)}")
    if waveform.ndim == 2 and waveform.shape[0] > MAX_CHANNELS and waveform.shape[1] <= MAX_CHANNELS:
        raise AudioInputError(
            f"{where}: shape {tuple(waveform.shape)} looks like (samples, channels); "
            "pass channels first, e.g. waveform.T"
        )
    if waveform.numel() == 0:
        raise AudioInputError(f"{where}: the audio is empty (0 samples)")
    if not waveform.is_floating_point():
        raise AudioInputError(
            f"{where}: expected floating-point samples, got {waveform.dtype}; scale integer PCM to [-1, 1] first"
        )
    waveform = waveform.to(torch.float32)
    bad = ~torch.isfinite(waveform)
    if bad.any():
        first = int(bad.flatten().nonzero()[0])
        raise AudioInputError(
            f"{where}: {int(bad.sum())} of {waveform.numel()} samples are NaN or infinite "
            f"(first at flat index {first}); a silent clip divided by its own peak does this"
        )
    if waveform.ndim == 2:
        waveform = waveform.mean(dim=0)
    if sample_rate != target_rate:
        waveform = torchaudio.functional.resample(waveform, int(sample_rate), target_rate)
    if waveform.numel() < min_samples:
        raise AudioInputError(
            f"{where}: too short: {waveform.numel()} samples at {target_rate} Hz, "
            f"need at least {min_samples} ({1000.0 * min_samples / target_rate:.0f} ms) for one analysis window"
        )
    return waveform


def waveform_to_fbank(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    config: FbankConfig = AST_AUDIOSET,
    *,
    source: str | Path | None = None,
) -> torch.Tensor:
    """Normalised log-mel filterbank of a waveform, shape ``(frames, num_mel_bins)``.

    Silence is valid input (its log-mel energies sit at the floor of ``log(eps)``); missing frames
    are zero-padded at the end *before* normalisation, as AST does.
    """
    wave = prepare_waveform(
        waveform, sample_rate, target_rate=config.sample_rate, min_samples=config.min_samples, source=source
    )
    wave = wave - wave.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        wave.unsqueeze(0),
        htk_compat=True,
        sample_frequency=config.sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=config.num_mel_bins,
        dither=0.0,
        frame_shift=config.frame_shift_ms,
        frame_length=config.frame_length_ms,
    )
    if config.target_frames is not None:
        missing = config.target_frames - fbank.shape[0]
        if missing > 0:
            fbank = torch.nn.functional.pad(fbank, (0, 0, 0, missing))
        else:
            fbank = fbank[: config.target_frames]
    return (fbank - config.mean) / (2.0 * config.std)


def fbank_to_image(fbank: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Lay a ``(..., frames, mel)`` fbank out as an image ``(..., channels, mel, frames)``.

    Rows are mel bins (row 0 is the lowest frequency), columns are time frames; the single
    spectrogram channel is repeated so an RGB patch embedding can read it.
    """
    image = fbank.transpose(-1, -2).unsqueeze(-3)
    return image.expand(*image.shape[:-3], channels, *image.shape[-2:]).contiguous()


def audio_to_image(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    config: FbankConfig = AST_AUDIOSET,
    *,
    source: str | Path | None = None,
) -> torch.Tensor:
    """Waveform -> ``(3, num_mel_bins, frames)`` spectrogram image
    (:func:`waveform_to_fbank` then :func:`fbank_to_image`)."""
    return fbank_to_image(waveform_to_fbank(waveform, sample_rate, config, source=source))


MEDIA_PACKAGES = {
    "soundfile": ("soundfile", "audio files (.wav, .flac, .ogg, ...)"),
    "av": ("PyAV", "video files and the audio of containers (.mp4, .mkv, ...)"),
}
"""The optional-at-import media readers: module name -> (what it is called, what it reads)."""


def import_media_package(name: str):
    """Import ``soundfile`` or ``av`` for reading media, or say which package is missing and how to install it.

    Both are dependencies of ``avpet_core`` but are imported only when media is read, so that
    ``import avpet_core`` works without them; a reader who lacks one gets this
    :class:`ModuleNotFoundError` (its ``name`` the module) instead of a bare one from deep inside.
    """
    title, reads = MEDIA_PACKAGES[name]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # the package is there but something it needs is not
            raise ModuleNotFoundError(
                f"{title} (the '{name}' package) is installed but cannot be imported ({err}); "
                f"reinstall it: pip install --force-reinstall {name}",
                name=err.name,
            ) from err
        raise ModuleNotFoundError(
            f"reading {reads} needs {title} (the '{name}' package), which is not installed in this "
            f"environment: pip install {name}",
            name=name,
        ) from err


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an audio file with ``soundfile``; returns a channels-first float32 waveform and its rate."""
    soundfile = import_media_package("soundfile")

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: audio file not found")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AudioInputError(f"{path}: cannot decode audio ({err})") from err
    if data.shape[0] == 0:
        raise AudioInputError(f"{path}: the audio is empty (0 samples)")
    return torch.from_numpy(data.T.copy()), int(rate)


def segment_fbank_images(
    waveform: torch.Tensor,
    config: FbankConfig,
    *,
    num_segments: int = 10,
    segment_seconds: float = 1.0,
    starts: list[float] | None = None,
    source: str | Path | None = None,
) -> torch.Tensor:
    """Spectrogram images ``(num_segments, 3, mel, frames)`` of consecutive segments of a waveform.

    ``waveform`` is 1-D at ``config.sample_rate``. Segment ``t`` covers ``[starts[t], starts[t] +
    segment_seconds)`` (default ``starts[t] = t * segment_seconds``); each segment goes separately
    through :func:`audio_to_image`, so it is mean-subtracted, padded or cropped to
    ``config.target_frames`` and normalised on its own, exactly as a one-second clip would be. A
    segment that lies (partly) past the end of the waveform keeps what there is; one shorter than
    a single analysis window is an :class:`AudioInputError` naming ``source``. Pure waveform work:
    the same for a decoded video's track and for synthetic sound.
    """
    rate = config.sample_rate
    starts = [t * segment_seconds for t in range(num_segments)] if starts is None else list(starts)
    length = int(round(segment_seconds * rate))
    where = source if source is not None else "waveform"
    images = []
    for index, start in enumerate(starts):
        first = max(0, int(round(start * rate)))
        piece = waveform[first : first + length]
        images.append(audio_to_image(piece, rate, config, source=f"{where} [segment {index}, {start:g} s]"))
    images = torch.stack(images)
    if not torch.isfinite(images).all():
        raise AudioInputError(f"{where}: NaN or infinite values in the filterbank features")
    return images
