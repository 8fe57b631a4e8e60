"""Tiny media files for the data tests, encoded at test time with PyAV and soundfile.

Videos are 10 s at 4 frames per second, 64 x 48 pixels (MPEG-4 Part 2 video, AAC audio). Second
``t`` of a video shows a solid colour :func:`colour_of_second` and plays a tone whose pitch rises
with ``t``, so tests can check that a decoded frame or audio segment comes from the right second.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 64, 48, 4


def colour_of_second(second: int) -> tuple[int, int, int]:
    """The RGB colour shown during second ``second`` (distinct for 0-59)."""
    return (40 + (second * 37) % 180, 200 - (second * 53) % 160, 60 + (second * 23) % 150)


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """``(channels, samples)`` float32: a tone whose pitch is 300 Hz + 100 Hz per second."""
    t = np.arange(int(round(seconds * rate))) / rate
    freq = 300.0 + 100.0 * np.floor(t)
    wave = 0.3 * np.sin(2 * math.pi * np.cumsum(freq) / rate)
    return np.repeat(wave[None, :], channels, axis=0).astype(np.float32)


def write_mp4(
    path: Path, *, seconds: int = 10, audio: bool = True, audio_rate: int = 22_050, channels: int = 2
) -> Path:
    """Encode a test video (solid colour per second, optional AAC tone track)."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = None
        if audio:
            sound = container.add_stream("aac", rate=audio_rate)
            sound.layout = "stereo" if channels == 2 else "mono"
        for index in range(seconds * FPS):
            image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            image[:] = colour_of_second(index // FPS)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = tone(seconds, audio_rate, channels)
            chunk = 1024
            for offset in range(0, samples.shape[1], chunk):
                piece = np.ascontiguousarray(samples[:, offset : offset + chunk])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=sound.layout.name)
                frame.sample_rate = audio_rate
                frame.pts = offset
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def write_truncated_mp4(path: Path, source: Path, keep: float = 0.5) -> Path:
    """A copy of ``source`` cut to its first ``keep`` fraction of bytes (its index is lost)."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_garbage(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a media file's name."""
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A float WAV file from ``(channels, samples)``."""
    import soundfile

    soundfile.write(str(path), np.asarray(samples, dtype=np.float32).T, rate, subtype="FLOAT")
    return path
