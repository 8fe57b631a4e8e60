"""Media sources: a video's frames and audio by its id, for datasets that name videos by id.

A *media source* (:data:`MediaSource`) is any callable ``video_id -> (frames, audio)``; question
and caption datasets (:class:`~avpet_core.data.music_avqa.MusicAVQA`, a VALOR-32K reader) take
one, so the same reader serves real videos and rendered synthetic scenes
(:class:`avpet_core.data.synthetic.SynthAVQAMedia`). :class:`VideoFolderMedia` decodes real
videos from a folder (:mod:`avpet_core.data.media`), one frame and one second of audio per segment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from avpet_core.audio import FbankConfig, segment_fbank_images
from avpet_core.data.ave import AVE_FBANK_VITB
from avpet_core.data.media import MediaDecodeError, decode_frames, load_audio_16k_mono, probe_video

MediaSource = Callable[[str], tuple[torch.Tensor, torch.Tensor]]
"""``video_id -> (frames (T, 3, H, W) float32 in [0, 1], audio (T, 3, mel, frames))``."""


class VideoFolderMedia:
    """Frames and audio of the videos in a folder, ``{video_dir}/{video_id}.mp4`` (MUSIC-AVQA's layout).

    The video (MUSIC-AVQA's are about 60 s) is cut into ``num_segments`` equal parts; segment ``t``
    contributes the frame at its centre and the one second of audio centred there, so ten
    segments of a 60 s video sample it every 6 s, as the AVST baseline does. Audio comes from
    ``{audio_dir}/{video_id}.wav`` when ``audio_dir`` is given, else from the video's own track.
    """

    def __init__(
        self,
        video_dir: str | Path,
        *,
        num_segments: int = 10,
        image_size: int = 224,
        fbank: FbankConfig | None = None,
        audio_dir: str | Path | None = None,
        suffix: str = ".mp4",
    ):
        self.video_dir = Path(video_dir)
        self.audio_dir = Path(audio_dir) if audio_dir is not None else None
        self.num_segments, self.image_size, self.suffix = num_segments, image_size, suffix
        self.fbank = fbank if fbank is not None else AVE_FBANK_VITB

    def __call__(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.video_dir / f"{video_id}{self.suffix}"
        duration = probe_video(path).duration
        if duration <= 0:
            raise MediaDecodeError(f"{path}: the container does not report a duration")
        step = duration / self.num_segments
        centres = [(t + 0.5) * step for t in range(self.num_segments)]
        frames = decode_frames(path, centres, size=self.image_size).float() / 255.0
        audio_path = self.audio_dir / f"{video_id}.wav" if self.audio_dir is not None else path
        waveform = load_audio_16k_mono(audio_path)
        audio = segment_fbank_images(
            waveform,
            self.fbank,
            num_segments=self.num_segments,
            starts=[max(0.0, c - 0.5) for c in centres],
            source=audio_path,
        )
        return frames, audio
