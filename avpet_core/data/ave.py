"""AVE, the Audio-Visual Event dataset (Tian et al., ECCV 2018): annotations, decoding, caching.

The dataset is 4,143 ten-second videos, each with one of 28 event categories; every one-second
segment is labelled with the category where the event is both visible and audible, else
background. Its files:

* ``Annotations.txt`` — one line per video, ``Category&VideoID&Quality&StartTime&EndTime``, e.g.
  ``Church bell&RUhOCu3LNXM&good&0&10``; some copies start with that header line, some do not;
* ``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt`` — the splits, in the same format;
* ``AVE/{VideoID}.mp4`` — the videos (``videos/`` or the root itself are accepted too).

Class indices follow the order in which categories first appear in ``Annotations.txt`` (as in the
original code); background is the next index, 28 on the full dataset. Segment ``t`` (covering
``[t, t + 1)`` s) is an event when ``StartTime <= t < EndTime`` — intervals are half-open.

:class:`AVE` is a ``Dataset`` with the same item keys as SynthAVE. Decoding a video takes a good
fraction of a second, so :func:`preprocess_ave` decodes every video once into a cache directory
(frames as ``uint8``, filterbanks as float32, one file per video, each written atomically, plus a
``manifest.json``); an interrupted run resumes where it stopped, and a video that fails to decode
is recorded and does not undo the others. ``AVE(..., preprocessed=DIR)`` then reads the cache.

Every problem with the files is one :class:`~avpet_core.data.media.DatasetFormatError` or
:class:`~avpet_core.data.media.MediaDecodeError` naming the file (and line).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avpet_core.audio import FbankConfig, segment_fbank_images
from avpet_core.files import atomic_write_bytes, ensure_writable
from avpet_core.data.media import (
    DataError,
    DatasetFormatError,
    MediaDecodeError,
    decode_frames,
    load_audio_16k_mono,
)

AVE_NUM_CLASSES = 28
AVE_DURATION = 10  # seconds = segments
AVE_FIELDS = ("Category", "VideoID", "Quality", "StartTime", "EndTime")
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

AVE_FBANK_VITB = FbankConfig(num_mel_bins=128, target_frames=96, mean=-4.1426, std=3.2001)
"""Real-data audio for ViT-B/16: LAVISH's AVE setting (128 mel bins, AVE statistics) cropped to 96 frames.

LAVISH pads each one-second segment's 98 frames to 102 (``avpet_core.audio.LAVISH_AVE_1S``), which
is not a whole number of 16-pixel patches: timm's patch embedding would silently drop the last 6
columns, or refuse the input. Cropping to 96 frames (6 patches) keeps 0.96 s of real signal and no
padding, so every audio token sees sound; the 20 ms lost at the end of each second is shorter
than one 25 ms analysis window.
"""

AVE_FBANK_MICRO = FbankConfig(num_mel_bins=64, target_frames=96, mean=-4.1426, std=3.2001)
"""Real-data audio for the micro-ViT: 64 mel bins x 96 frames (8 x 12 patches of 8 px).

The statistics are LAVISH's 128-bin AVE values, an approximation for 64 bins; recompute them on
your copy of the data (mean and std of the raw fbank of the train split) for exact normalisation.
"""


@dataclass(frozen=True)
class AnnotationRow:
    """One line of an AVE annotation or split file."""

    category: str
    video_id: str
    quality: str
    start: int
    end: int
    where: str  # "path:line"


def _is_header(fields: list[str]) -> bool:
    return [f.strip().lower() for f in fields] == [f.lower() for f in AVE_FIELDS]


def read_annotation_file(path: str | Path, *, known_classes: tuple[str, ...] | None = None) -> list[AnnotationRow]:
    """Parse ``Annotations.txt`` or a split file; the header line is optional, blank lines are skipped.

    Raises :class:`DatasetFormatError` naming ``path:line`` for a line without five ``&``-separated
    fields, a time that is not a whole number, ``start > end`` or a time outside ``[0, 10]``, and,
    when ``known_classes`` is given, a category not in it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise DatasetFormatError(f"{path}: annotation file not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: cannot read ({err})") from err
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.rstrip("\r\n").split("&")
        if not rows and _is_header(fields):
            continue
        if len(fields) != len(AVE_FIELDS):
            raise DatasetFormatError(
                f"{where}: expected 5 fields Category&VideoID&Quality&StartTime&EndTime, "
                f"got {len(fields)}: {line.strip()!r}"
            )
        category, video_id, quality = (f.strip() for f in fields[:3])
        if not category or not video_id:
            raise DatasetFormatError(f"{where}: empty category or video id: {line.strip()!r}")
        try:
            start, end = (int(f.strip()) for f in fields[3:])
        except ValueError as err:
            raise DatasetFormatError(
                f"{where}: start and end must be whole seconds, got {fields[3].strip()!r} and {fields[4].strip()!r}"
            ) from err
        if not (0 <= start <= AVE_DURATION and 0 <= end <= AVE_DURATION):
            raise DatasetFormatError(f"{where}: event [{start}, {end}) lies outside the video's 0-{AVE_DURATION} s")
        if start > end:
            raise DatasetFormatError(f"{where}: event starts after it ends (start {start} > end {end})")
        if known_classes is not None and category not in known_classes:
            raise DatasetFormatError(f"{where}: unknown class {category!r} (not in Annotations.txt)")
        rows.append(AnnotationRow(category, video_id, quality.strip(), start, end, where))
    return rows


def class_order(rows: list[AnnotationRow]) -> tuple[str, ...]:
    """Categories in order of first appearance (the class index order of AVE's code)."""
    return tuple(dict.fromkeys(row.category for row in rows))


def segment_labels(
    rows: list[AnnotationRow], class_names: tuple[str, ...], num_segments: int = AVE_DURATION
) -> torch.Tensor:
    """Labels ``(num_segments,)`` of one video: its class where ``start <= t < end``, else background.

    Background is ``len(class_names)`` (28 on the full dataset). Several rows for one video are
    merged (later rows win where they overlap).
    """
    labels = torch.full((num_segments,), len(class_names), dtype=torch.int64)
    for row in rows:
        labels[row.start : row.end] = class_names.index(row.category)
    return labels


@dataclass(frozen=True)
class AVEMediaConfig:
    """How AVE videos become tensors (a preprocessed cache records it and refuses another)."""

    image_size: int = 224
    frames_per_segment: int = 1
    fbank: FbankConfig = AVE_FBANK_VITB
    strict_audio: bool = False  # True: refuse audio that is not already 16 kHz mono
    num_segments: int = AVE_DURATION

    def frame_times(self) -> list[float]:
        """Where frames are taken: ``frames_per_segment`` evenly inside each one-second segment."""
        n = self.frames_per_segment
        return [t + (j + 0.5) / n for t in range(self.num_segments) for j in range(n)]


AVE_MICRO = AVEMediaConfig(image_size=48, fbank=AVE_FBANK_MICRO)
"""Real AVE at the micro-ViT's sizes: 48 px frames, 64 x 96 spectrograms."""


def decode_ave_video(video: Path, media: AVEMediaConfig = AVEMediaConfig(), audio: Path | None = None) -> dict:
    """Decode one video: ``frames`` uint8 ``(T, 3, S, S)`` (``(T, N, 3, S, S)`` for N frames per
    segment) and ``fbank`` float32 ``(T, mel, frames)``, audio from ``audio`` if given, else the video's track."""
    frames = decode_frames(video, media.frame_times(), size=media.image_size)
    if media.frames_per_segment > 1:
        frames = frames.view(media.num_segments, media.frames_per_segment, *frames.shape[1:])
    source = audio if audio is not None else video
    waveform = load_audio_16k_mono(source, strict=media.strict_audio, sample_rate=media.fbank.sample_rate)
    fbank = segment_fbank_images(waveform, media.fbank, num_segments=media.num_segments, source=source)[:, 0]
    return {"frames": frames, "fbank": fbank.contiguous()}


def _video_dir(root: Path, video_dir: str | Path | None) -> Path:
    if video_dir is not None:
        return Path(video_dir)
    for candidate in (root / "AVE", root / "videos"):
        if candidate.is_dir():
            return candidate
    return root


@dataclass
class AVEIndex:
    """The parsed annotation files of an AVE copy: classes, and per split the videos and their rows."""

    root: Path
    class_names: tuple[str, ...]
    splits: dict[str, dict[str, list[AnnotationRow]]] = field(default_factory=dict)

    @classmethod
    def read(
        cls, root: str | Path, splits: tuple[str, ...] = tuple(SPLIT_FILES), annotations: str = "Annotations.txt"
    ) -> "AVEIndex":
        root = Path(root)
        class_names = class_order(read_annotation_file(root / annotations))
        index = cls(root, class_names)
        for split in splits:
            if split not in SPLIT_FILES:
                raise ValueError(f"unknown AVE split {split!r}; choose from {', '.join(SPLIT_FILES)}")
            videos: dict[str, list[AnnotationRow]] = {}
            for row in read_annotation_file(root / SPLIT_FILES[split], known_classes=class_names):
                videos.setdefault(row.video_id, []).append(row)
            index.splits[split] = videos
        return index


def _load_video_cache(path: Path) -> dict:
    try:
        stored = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise DatasetFormatError(
            f"{path}: unreadable cached video ({type(err).__name__}); delete it and preprocess again"
        ) from err
    if not isinstance(stored, dict) or "frames" not in stored or "fbank" not in stored:
        raise DatasetFormatError(f"{path}: cached video lacks frames or fbank; delete it and preprocess again")
    if not torch.isfinite(stored["fbank"]).all():
        raise DatasetFormatError(f"{path}: NaN or infinite values in the cached audio features")
    return stored


def _read_manifest(directory: Path, media: AVEMediaConfig) -> dict:
    path = directory / MANIFEST
    settings = json.loads(json.dumps(asdict(media)))
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "media": settings, "videos": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetFormatError(f"{path}: unreadable manifest ({err})") from err
    if manifest.get("media") != settings:
        raise DatasetFormatError(
            f"{path}: this cache was made with other settings ({manifest.get('media')}); "
            f"use another directory for {settings}"
        )
    return manifest


def _write_manifest(directory: Path, manifest: dict) -> None:
    atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


@dataclass
class PreprocessReport:
    """What :func:`preprocess_ave` did: videos decoded now, found done, failed, missing."""

    decoded: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def preprocess_ave(
    root: str | Path,
    out_dir: str | Path,
    *,
    splits: tuple[str, ...] = tuple(SPLIT_FILES),
    media: AVEMediaConfig = AVEMediaConfig(),
    video_dir: str | Path | None = None,
    audio_dir: str | Path | None = None,
    on_error: str = "skip",
    missing: str = "skip",
) -> PreprocessReport:
    """Decode every video of ``splits`` once into ``out_dir``; resumable, atomic, failure-tolerant.

    Each video becomes ``out_dir/{video_id}.pt`` (``frames`` uint8, ``fbank`` float32), written
    atomically, and ``out_dir/manifest.json`` is rewritten (atomically) after every video, so an
    interrupted run loses at most the video in progress and a new run skips every video already
    done. A video that fails to decode is recorded in the manifest with its error; with
    ``on_error="skip"`` the run goes on (and a later run retries it), with ``"raise"`` it stops with
    that error — either way everything done so far stays. A missing video file is counted
    (``missing="skip"``) or an error (``"error"``). An unwritable ``out_dir`` raises
    :class:`avpet_core.files.CacheError` before any work.
    """
    if on_error not in ("skip", "raise") or missing not in ("skip", "error"):
        raise ValueError(
            f"on_error must be 'skip' or 'raise' and missing 'skip' or 'error', got {on_error!r}, {missing!r}"
        )
    root, out_dir = Path(root), Path(out_dir)
    index = AVEIndex.read(root, splits)
    ensure_writable(out_dir)
    manifest = _read_manifest(out_dir, media)
    videos_dir, report = _video_dir(root, video_dir), PreprocessReport()
    ordered = dict.fromkeys(video_id for split in splits for video_id in index.splits[split])
    for video_id in ordered:
        entry = manifest["videos"].get(video_id, {})
        target = out_dir / f"{video_id}.pt"
        if entry.get("status") == "done" and target.is_file():
            report.already_done.append(video_id)
            continue
        path = videos_dir / f"{video_id}.mp4"
        if not path.is_file():
            if missing == "error":
                raise MediaDecodeError(f"{path}: video file not found (video {video_id})")
            report.missing.append(video_id)
            continue
        audio = Path(audio_dir) / f"{video_id}.wav" if audio_dir is not None else None
        try:
            decoded = decode_ave_video(path, media, audio)
        except DataError as err:
            manifest["videos"][video_id] = {"status": "failed", "error": str(err)}
            report.failed[video_id] = str(err)
            _write_manifest(out_dir, manifest)
            if on_error == "raise":
                raise
            continue
        buffer = io.BytesIO()
        torch.save(decoded, buffer)
        atomic_write_bytes(target, buffer.getvalue())
        manifest["videos"][video_id] = {"status": "done", "file": target.name}
        _write_manifest(out_dir, manifest)
        report.decoded.append(video_id)
    return report


class AVE(Dataset):
    """AVE videos of one split as a ``Dataset`` of AVE-style items (the same keys as SynthAVE).

    Args:
        root: the dataset directory with ``Annotations.txt`` and the split files.
        split: ``"train"``, ``"val"`` or ``"test"``.
        media: sizes and filterbank (:class:`AVEMediaConfig`; :data:`AVE_MICRO` for the micro-ViT).
        video_dir / audio_dir: where ``{id}.mp4`` (default ``root/AVE``, ``root/videos`` or
            ``root``) and optional ``{id}.wav`` files are.
        preprocessed: a directory filled by :func:`preprocess_ave` to read instead of decoding.
        missing: ``"skip"`` leaves out videos whose file (or cache entry) is missing and lists
            them in ``missing_videos``; ``"error"`` raises naming the first one.

    Items: ``frames`` float32 ``(T, 3, S, S)`` in ``[0, 1]`` (``(T, N, 3, S, S)`` with N frames
    per segment), ``audio`` float32 ``(T, 3, mel, frames)``, ``labels`` int64 ``(T,)`` with
    background = ``background_index`` (28 on the full dataset), ``video_id`` str.

    Attributes: ``class_names`` (events in first-appearance order, then ``"background"``),
    ``num_classes`` (events + 1), ``num_event_classes``, ``background_index``, ``missing_videos``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        media: AVEMediaConfig = AVEMediaConfig(),
        video_dir: str | Path | None = None,
        audio_dir: str | Path | None = None,
        preprocessed: str | Path | None = None,
        missing: str = "skip",
    ):
        if missing not in ("skip", "error"):
            raise ValueError(f"missing must be 'skip' or 'error', got {missing!r}")
        self.root, self.split, self.media = Path(root), split, media
        index = AVEIndex.read(self.root, (split,))
        self.num_event_classes = len(index.class_names)
        self.background_index = self.num_event_classes
        self.num_classes = self.num_event_classes + 1
        self.class_names = index.class_names + ("background",)
        self.video_dir = _video_dir(self.root, video_dir)
        self.audio_dir = Path(audio_dir) if audio_dir is not None else None
        self.preprocessed = Path(preprocessed) if preprocessed is not None else None
        done = {}
        if self.preprocessed is not None:
            done = {
                k: v for k, v in _read_manifest(self.preprocessed, media)["videos"].items() if v.get("status") == "done"
            }
        self.videos: list[tuple[str, torch.Tensor]] = []
        self.missing_videos: list[str] = []
        for video_id, rows in index.splits[split].items():
            if self.preprocessed is not None:
                available = video_id in done and (self.preprocessed / done[video_id]["file"]).is_file()
                what = (
                    f"{self.preprocessed / MANIFEST}: video {video_id} ({rows[0].where}) "
                    "is not in the preprocessed cache"
                )
            else:
                available = (self.video_dir / f"{video_id}.mp4").is_file()
                what = f"{self.video_dir / (video_id + '.mp4')}: video file not found ({rows[0].where})"
            if not available:
                if missing == "error":
                    raise MediaDecodeError(what)
                self.missing_videos.append(video_id)
                continue
            self.videos.append((video_id, segment_labels(rows, index.class_names, media.num_segments)))
        self.label_counts = Counter(self.class_names[int(label)] for _, labels in self.videos for label in labels)

    def __len__(self) -> int:
        return len(self.videos)

    def raw(self, index: int) -> dict:
        """``frames`` uint8 and ``fbank`` float32 ``(T, mel, frames)`` of video ``index``."""
        video_id, _ = self.videos[index]
        if self.preprocessed is not None:
            return _load_video_cache(self.preprocessed / f"{video_id}.pt")
        audio = self.audio_dir / f"{video_id}.wav" if self.audio_dir is not None else None
        return decode_ave_video(self.video_dir / f"{video_id}.mp4", self.media, audio)

    def __getitem__(self, index: int) -> dict:
        video_id, labels = self.videos[index]
        decoded = self.raw(index)
        fbank = decoded["fbank"]
        return {
            "frames": decoded["frames"].float() / 255.0,
            "audio": fbank.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(),
            "labels": labels.clone(),
            "video_id": video_id,
        }
