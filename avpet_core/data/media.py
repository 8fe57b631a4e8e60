"""Decoding media files: video frames at given times, audio for a time range.

Video is decoded with PyAV (FFmpeg inside its wheel); stand-alone audio files (``.wav``, ``.flac``,
``.ogg``) with ``soundfile``. Both return plain tensors:

* :func:`decode_frames` — RGB ``uint8`` frames ``(N, 3, H, W)`` for N requested times (seconds),
  each the last frame shown at or before that time, optionally resized to ``size x size``;
* :func:`decode_audio` — a channels-first float32 waveform ``(C, samples)`` and its rate, for the
  whole file or ``[start, end)`` seconds;
* :func:`load_audio_16k_mono` — the same, checked, down-mixed and resampled to 16 kHz mono by the
  audio front end (:func:`avpet_core.audio.prepare_waveform`), or with ``strict=True`` refused if
  it is not already 16 kHz mono;

Turning a decoded waveform into per-segment filterbank images is pure waveform work and lives in
:func:`avpet_core.audio.segment_fbank_images`.

Every failure is a :class:`MediaDecodeError` (a ``ValueError``) whose one-line message names the
file and what is wrong; the PyAV / soundfile exception is kept as its ``__cause__``. PyAV and
soundfile are imported only here, when media is read: without one, reading raises a
:class:`ModuleNotFoundError` that names the package and its ``pip install`` command
(:func:`avpet_core.audio.import_media_package`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avpet_core.files import first_line
from avpet_core.audio import (
    AudioInputError,
    import_media_package,
    load_audio,
    prepare_waveform,
)

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
"""Audio files read with ``soundfile``; anything else is opened as a container with PyAV."""


class DataError(ValueError):
    """Base class of the data layer's errors: bad dataset files, media or features."""


class DatasetFormatError(DataError):
    """An annotation, split or question file that does not follow its dataset's format."""


class MediaDecodeError(DataError):
    """A media file that is missing, corrupt, truncated, or lacks the stream that is needed."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` finds in a container."""

    path: Path
    duration: float  # seconds; 0.0 if the container does not say
    has_video: bool
    has_audio: bool
    width: int
    height: int
    audio_rate: int
    audio_channels: int


def _open_container(path: Path):
    av = import_media_package("av")

    if not path.is_file():
        raise MediaDecodeError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise MediaDecodeError(f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        raise MediaDecodeError(
            f"{path}: cannot open as a media file, corrupt or truncated? ({first_line(err)})"
        ) from err


def probe_video(path: str | Path) -> VideoInfo:
    """Streams and duration of a media file, without decoding it."""
    path = Path(path)
    with _open_container(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = container.duration / 1_000_000 if container.duration else 0.0
        return VideoInfo(
            path=path,
            duration=float(duration),
            has_video=video is not None,
            has_audio=audio is not None,
            width=int(video.codec_context.width) if video is not None else 0,
            height=int(video.codec_context.height) if video is not None else 0,
            audio_rate=int(audio.codec_context.sample_rate or 0) if audio is not None else 0,
            audio_channels=int(audio.codec_context.channels or 0) if audio is not None else 0,
        )


def resize_frames(frames: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``uint8`` frames ``(N, 3, H, W)`` to ``size`` (antialiased bilinear), still ``uint8``.

    The whole frame is resized, without cropping, as LAVISH does for AVE (``Resize((224, 224))``).
    """
    height, width = (size, size) if isinstance(size, int) else size
    if frames.shape[-2:] == (height, width):
        return frames
    resized = torch.nn.functional.interpolate(
        frames.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round().clamp(0, 255).to(torch.uint8)


def decode_frames(
    path: str | Path,
    times: list[float] | torch.Tensor,
    *,
    size: int | tuple[int, int] | None = None,
    tolerance: float = 1.0,
) -> torch.Tensor:
    """RGB frames ``(len(times), 3, H, W)`` as ``uint8``, each the frame on screen at that time.

    The video is decoded once from the start; for each requested time (seconds, ascending or not)
    the last frame whose timestamp is at or before it is kept. A time more than ``tolerance``
    seconds past the last decodable frame is an error (a truncated file), as is a file without a
    video stream or one that fails to decode.
    """
    av = import_media_package("av")

    path = Path(path)
    wanted = sorted((float(t), i) for i, t in enumerate(torch.as_tensor(times, dtype=torch.float64).tolist()))
    if not wanted:
        raise ValueError("decode_frames needs at least one time")
    picked: list[np.ndarray | None] = [None] * len(wanted)
    cursor = 0
    last_array, last_time = None, None
    with _open_container(path) as container:
        if not container.streams.video:
            raise MediaDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                time = float(frame.time)
                # Every wanted time before this frame's timestamp is shown by the previous frame.
                while cursor < len(wanted) and wanted[cursor][0] < time and last_array is not None:
                    picked[wanted[cursor][1]] = last_array
                    cursor += 1
                if cursor == len(wanted):
                    break
                last_array, last_time = frame.to_ndarray(format="rgb24"), time
        except (av.error.FFmpegError, ValueError) as err:
            raise MediaDecodeError(f"{path}: video decoding failed, corrupt or truncated? ({first_line(err)})") from err
    if last_array is None:
        raise MediaDecodeError(f"{path}: no decodable video frames, corrupt or truncated?")
    for requested, index in wanted[cursor:]:
        if requested > last_time + tolerance:
            raise MediaDecodeError(
                f"{path}: frames end at {last_time:.2f} s but one at {requested:.2f} s was requested; truncated video?"
            )
        picked[index] = last_array
    frames = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).contiguous()
    return resize_frames(frames, size) if size is not None else frames


def _read_container_audio(path: Path) -> tuple[torch.Tensor, int]:
    av = import_media_package("av")

    with _open_container(path) as container:
        if not container.streams.audio:
            raise MediaDecodeError(f"{path}: no audio track; pass an audio file for it instead")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        # Convert every frame to planar float32 at its own rate and layout; down-mixing and
        # resampling are left to the audio front end so that every source takes the same path.
        resampler = av.AudioResampler(format="fltp")
        chunks = []
        try:
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
            for converted in resampler.resample(None):
                chunks.append(converted.to_ndarray())
        except (av.error.FFmpegError, ValueError) as err:
            raise MediaDecodeError(f"{path}: audio decoding failed, corrupt or truncated? ({first_line(err)})") from err
    if not chunks or sum(c.shape[-1] for c in chunks) == 0:
        raise MediaDecodeError(f"{path}: the audio track is empty (0 samples)")
    return torch.from_numpy(np.concatenate(chunks, axis=-1).astype(np.float32, copy=False)), rate


def _read_soundfile(path: Path) -> tuple[torch.Tensor, int]:
    """:func:`avpet_core.audio.load_audio`, with its errors as :class:`MediaDecodeError`."""
    try:
        return load_audio(path)
    except AudioInputError as err:
        raise MediaDecodeError(str(err)) from err


def decode_audio(path: str | Path, *, start: float = 0.0, end: float | None = None) -> tuple[torch.Tensor, int]:
    """Channels-first float32 waveform ``(C, samples)`` of ``[start, end)`` seconds, and its rate.

    ``.wav`` / ``.flac`` / ``.ogg`` files are read with ``soundfile``, anything else (``.mp4``,
    ``.mkv``, ...) from its first audio track with PyAV. The samples are returned as stored: no
    down-mixing, no resampling (see :func:`load_audio_16k_mono`).
    """
    path = Path(path)
    reader = _read_soundfile if path.suffix.lower() in SOUNDFILE_SUFFIXES else _read_container_audio
    waveform, rate = reader(path)
    if rate <= 0:
        raise MediaDecodeError(f"{path}: the audio stream reports no sample rate")
    first = max(0, int(round(start * rate)))
    last = waveform.shape[-1] if end is None else min(waveform.shape[-1], int(round(end * rate)))
    if last <= first:
        raise MediaDecodeError(
            f"{path}: no audio in [{start:g}, {end if end is not None else 'end'}) s; "
            f"the audio lasts {waveform.shape[-1] / rate:.2f} s"
        )
    return waveform[:, first:last], rate


def load_audio_16k_mono(
    path: str | Path, *, start: float = 0.0, end: float | None = None, strict: bool = False, sample_rate: int = 16_000
) -> torch.Tensor:
    """A file's audio as a 1-D float32 waveform at ``sample_rate`` (16 kHz), mono.

    With ``strict=False`` (default) any rate and channel count is accepted, down-mixed by averaging
    and resampled. With ``strict=True`` a file that is not already ``sample_rate`` mono is refused,
    for pipelines that promise their audio was prepared beforehand. NaN or infinite samples and
    empty audio are always errors.
    """
    path = Path(path)
    waveform, rate = decode_audio(path, start=start, end=end)
    if strict and rate != sample_rate:
        raise MediaDecodeError(
            f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz (strict mode does not resample)"
        )
    if strict and waveform.shape[0] != 1:
        raise MediaDecodeError(
            f"{path}: audio has {waveform.shape[0]} channels, expected mono (strict mode does not down-mix)"
        )
    try:
        return prepare_waveform(waveform, rate, target_rate=sample_rate, source=path)
    except AudioInputError as err:
        raise MediaDecodeError(str(err)) from err
