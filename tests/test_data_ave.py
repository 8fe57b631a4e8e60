"""AVE: a tiny real-format copy built at test time, read end to end; every kind of bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from avpet_core.data import AVE, AVEMediaConfig, DatasetFormatError, MediaDecodeError, preprocess_ave
from avpet_core.data.ave import AVE_FBANK_MICRO, AVE_FBANK_VITB, class_order, read_annotation_file, segment_labels
from avpet_core.data.media import decode_audio, decode_frames, load_audio_16k_mono, probe_video
from avpet_core.files import CacheError
from fixtures_media import colour_of_second, tone, write_garbage, write_mp4, write_truncated_mp4, write_wav

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
ANNOTATIONS = [
    "Church bell&vidA&good&0&10",
    "Bark&vidB&good&2&7",
    "Church bell&vidC&bad&3&5",
    "Violin, fiddle&vidD&good&1&9",  # its video file is missing
    "Bark&vidE&good&0&4",  # no audio track
    "Violin, fiddle&vidF&good&5&10",  # truncated file
]
SPLITS = {"train": [0, 1, 3], "val": [2], "test": [4, 5]}
SMALL_MEDIA = AVEMediaConfig(image_size=32, fbank=AVE_FBANK_MICRO)


def write_ave(root, *, header=True):
    (root / "AVE").mkdir(parents=True, exist_ok=True)
    (root / "Annotations.txt").write_text("\n".join(([HEADER] if header else []) + ANNOTATIONS) + "\n")
    for split, rows in SPLITS.items():
        name = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}[split]
        (root / name).write_text("\n".join([HEADER] + [ANNOTATIONS[i] for i in rows]) + "\n")
    return root


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory):
    """A real-format AVE copy: annotations with a header, three split files, five mp4s."""
    root = write_ave(tmp_path_factory.mktemp("AVE_Dataset"))
    videos = root / "AVE"
    write_mp4(videos / "vidA.mp4")
    write_mp4(videos / "vidB.mp4", audio_rate=16_000, channels=1)
    write_mp4(videos / "vidC.mp4")
    write_mp4(videos / "vidE.mp4", audio=False)
    write_truncated_mp4(videos / "vidF.mp4", videos / "vidA.mp4")
    return root


@pytest.fixture
def ave_copy(ave_root, tmp_path):
    return shutil.copytree(ave_root, tmp_path / "copy")


# ------------------------------------------------------------------------------- end to end


def test_reads_a_real_format_copy_end_to_end(ave_root):
    train = AVE(ave_root, "train", media=SMALL_MEDIA)
    assert train.class_names == ("Church bell", "Bark", "Violin, fiddle", "background")
    assert train.num_classes == 4 and train.background_index == 3
    assert [video_id for video_id, _ in train.videos] == ["vidA", "vidB"]
    assert train.missing_videos == ["vidD"]
    item = train[1]
    assert set(item) == {"frames", "audio", "labels", "video_id"}
    assert item["video_id"] == "vidB"
    assert item["labels"].tolist() == [3, 3, 1, 1, 1, 1, 1, 3, 3, 3]  # Bark over [2, 7)
    assert train[0]["labels"].tolist() == [0] * 10
    assert item["frames"].shape == (10, 3, 32, 32) and item["frames"].dtype == torch.float32
    assert item["audio"].shape == (10, 3, 64, 96) and torch.isfinite(item["audio"]).all()
    # Frame t is taken inside second t: its colour is that second's.
    for second in range(10):
        pixel = (item["frames"][second, :, 16, 16] * 255).round()
        assert torch.allclose(pixel, torch.tensor(colour_of_second(second), dtype=torch.float32), atol=8)
    val = AVE(ave_root, "val", media=SMALL_MEDIA)
    assert val[0]["labels"].tolist() == [3, 3, 3, 0, 0, 3, 3, 3, 3, 3]
    batch = torch.utils.data.default_collate([train[0], train[1]])
    assert batch["frames"].shape == (2, 10, 3, 32, 32) and batch["labels"].shape == (2, 10)


def test_audio_segments_follow_the_video(ave_root):
    """The tone's pitch rises each second, so the loudest mel bin rises from segment to segment."""
    audio = AVE(ave_root, "train", media=SMALL_MEDIA)[0]["audio"][:, 0]
    peak_bins = audio.mean(-1).argmax(-1)
    assert torch.all(peak_bins[1:] >= peak_bins[:-1]) and peak_bins[-1] > peak_bins[0]


def test_frames_per_segment_and_vit_b_preset(ave_root):
    media = AVEMediaConfig(image_size=32, frames_per_segment=2)
    item = AVE(ave_root, "val", media=media)[0]
    assert item["frames"].shape == (10, 2, 3, 32, 32)
    assert item["audio"].shape == (10, 3, 128, 96)
    assert AVE_FBANK_VITB.target_frames % 16 == 0 and AVE_FBANK_VITB.num_mel_bins % 16 == 0
    assert media.frame_times()[:4] == [0.25, 0.75, 1.25, 1.75]


def test_header_is_optional(tmp_path):
    with_header = read_annotation_file(write_ave(tmp_path / "a") / "Annotations.txt")
    without = read_annotation_file(write_ave(tmp_path / "b", header=False) / "Annotations.txt")
    assert [(r.category, r.video_id, r.start, r.end) for r in with_header] == [
        (r.category, r.video_id, r.start, r.end) for r in without
    ]
    assert class_order(without) == ("Church bell", "Bark", "Violin, fiddle")


def test_class_order_is_first_appearance_and_background_is_28():
    from avpet_core.data.ave import AnnotationRow

    names = tuple(f"class{k:02d}" for k in (5, 3, 9, *range(10, 35)))
    assert len(names) == 28
    rows = [AnnotationRow(name, f"v{i}", "good", 0, 10, "x") for i, name in enumerate(names)]
    assert class_order(rows + rows[:3]) == names
    labels = segment_labels([AnnotationRow("class03", "v", "good", 4, 6, "x")], names)
    assert labels.tolist() == [28, 28, 28, 28, 1, 1, 28, 28, 28, 28]


def test_missing_video_can_fail_instead(ave_root):
    with pytest.raises(MediaDecodeError, match=r"vidD\.mp4: video file not found \(.*trainSet\.txt:4\)"):
        AVE(ave_root, "train", media=SMALL_MEDIA, missing="error")


# ------------------------------------------------------------------------- bad annotations

BAD_LINES = [
    ("Church bell&vidX&good&0", r"Annotations\.txt:3: expected 5 fields"),
    ("Church bell&vidX&good&zero&10", r"Annotations\.txt:3: start and end must be whole seconds"),
    ("Church bell&vidX&good&7&3", r"Annotations\.txt:3: event starts after it ends \(start 7 > end 3\)"),
    ("Church bell&vidX&good&0&11", r"Annotations\.txt:3: event \[0, 11\) lies outside the video's 0-10 s"),
    ("Church bell&vidX&good&-1&4", r"Annotations\.txt:3: event \[-1, 4\) lies outside"),
]


@pytest.mark.parametrize(
    "line, message", BAD_LINES, ids=["fields", "not-a-number", "start-after-end", "past-10", "negative"]
)
def test_malformed_annotation_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "Annotations.txt"
    path.write_text(f"{HEADER}\nBark&vidA&good&0&10\n{line}\n")
    with pytest.raises(DatasetFormatError, match=message):
        read_annotation_file(path)


def test_unknown_class_in_split_file(ave_copy):
    (ave_copy / "testSet.txt").write_text("Bark&vidB&good&2&7\nKazoo&vidQ&good&0&10\n")
    with pytest.raises(DatasetFormatError, match=r"testSet\.txt:2: unknown class 'Kazoo' \(not in Annotations\.txt\)"):
        AVE(ave_copy, "test")


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"Annotations\.txt: annotation file not found"):
        AVE(tmp_path, "train")


# ----------------------------------------------------------------------------- bad media


def test_corrupt_truncated_and_audio_less_videos(ave_copy):
    videos = ave_copy / "AVE"
    with pytest.raises(MediaDecodeError, match=r"vidE\.mp4: no audio track"):
        AVE(ave_copy, "test", media=SMALL_MEDIA)[0]
    with pytest.raises(MediaDecodeError, match=r"vidF\.mp4: cannot open as a media file, corrupt or truncated"):
        decode_frames(videos / "vidF.mp4", [0.5])
    write_garbage(videos / "garbage.mp4")
    with pytest.raises(MediaDecodeError, match=r"garbage\.mp4: cannot open"):
        decode_audio(videos / "garbage.mp4")
    (videos / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaDecodeError, match=r"empty\.mp4: the file is empty"):
        probe_video(videos / "empty.mp4")
    with pytest.raises(MediaDecodeError, match=r"nothere\.mp4: video file not found"):
        decode_frames(videos / "nothere.mp4", [0.5])


def test_frames_past_the_end_are_refused(tmp_path):
    short = write_mp4(tmp_path / "short.mp4", seconds=3, audio=False)
    with pytest.raises(MediaDecodeError, match=r"short\.mp4: frames end at 2\.75 s but one at 9\.50 s was requested"):
        decode_frames(short, [0.5, 9.5])


def test_probe_and_audio_range(ave_root):
    info = probe_video(ave_root / "AVE" / "vidA.mp4")
    assert info.has_audio and info.has_video and info.audio_channels == 2 and abs(info.duration - 10) < 0.2
    waveform, rate = decode_audio(ave_root / "AVE" / "vidA.mp4", start=2.0, end=3.0)
    assert rate == 22_050 and waveform.shape == (2, 22_050)


def test_wav_problems(tmp_path):
    rate = 16_000
    empty = write_wav(tmp_path / "empty.wav", np.zeros((1, 0)), rate)
    with pytest.raises(MediaDecodeError, match=r"empty\.wav: the audio is empty \(0 samples\)"):
        load_audio_16k_mono(empty)
    samples = tone(1.0, rate)
    samples[0, 100] = np.nan
    with pytest.raises(MediaDecodeError, match=r"nan\.wav: 1 of 16000 samples are NaN"):
        load_audio_16k_mono(write_wav(tmp_path / "nan.wav", samples, rate))
    fast = write_wav(tmp_path / "fast.wav", tone(1.0, 44_100), 44_100)
    with pytest.raises(MediaDecodeError, match=r"fast\.wav: sample rate is 44100 Hz, expected 16000 Hz"):
        load_audio_16k_mono(fast, strict=True)
    assert load_audio_16k_mono(fast).shape == (16_000,)  # resampled when not strict
    stereo = write_wav(tmp_path / "stereo.wav", tone(1.0, rate, channels=2), rate)
    with pytest.raises(MediaDecodeError, match=r"stereo\.wav: audio has 2 channels, expected mono"):
        load_audio_16k_mono(stereo, strict=True)
    assert torch.allclose(load_audio_16k_mono(stereo), torch.from_numpy(tone(1.0, rate)[0]), atol=1e-6)
    not_audio = tmp_path / "text.wav"
    not_audio.write_text("not audio")
    with pytest.raises(MediaDecodeError, match=r"text\.wav: cannot decode audio"):
        load_audio_16k_mono(not_audio)


def test_audio_from_a_wav_beside_the_video(ave_copy, tmp_path):
    audio_dir = tmp_path / "wav"
    audio_dir.mkdir()
    write_wav(audio_dir / "vidE.wav", tone(10.0, 16_000), 16_000)
    (ave_copy / "testSet.txt").write_text("Bark&vidE&good&0&4\n")
    item = AVE(ave_copy, "test", media=SMALL_MEDIA, audio_dir=audio_dir)[0]
    assert item["audio"].shape == (10, 3, 64, 96) and item["labels"].tolist() == [1] * 4 + [3] * 6
    strict = AVEMediaConfig(image_size=32, fbank=AVE_FBANK_MICRO, strict_audio=True)
    assert AVE(ave_copy, "test", media=strict, audio_dir=audio_dir)[0]["audio"].shape == (10, 3, 64, 96)


# ---------------------------------------------------------------------------- preprocessing


def test_preprocess_caches_everything_and_keeps_going_past_failures(ave_root, tmp_path):
    out = tmp_path / "cache"
    report = preprocess_ave(ave_root, out, media=SMALL_MEDIA)
    assert report.decoded == ["vidA", "vidB", "vidC"]
    assert report.missing == ["vidD"]
    assert set(report.failed) == {"vidE", "vidF"}
    assert "vidE.mp4: no audio track" in report.failed["vidE"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["videos"]["vidA"] == {"status": "done", "file": "vidA.pt"}
    assert manifest["videos"]["vidF"]["status"] == "failed"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written
    # The dataset reads the cache and gives exactly what decoding gives.
    cached, decoded = (
        AVE(ave_root, "train", media=SMALL_MEDIA, preprocessed=out),
        AVE(ave_root, "train", media=SMALL_MEDIA),
    )
    assert cached.missing_videos == ["vidD"]
    for index in range(len(decoded)):
        a, b = cached[index], decoded[index]
        assert all(torch.equal(a[k], b[k]) for k in ("frames", "audio", "labels")) and a["video_id"] == b["video_id"]
    # A second run redoes nothing that is done (and retries the failures).
    again = preprocess_ave(ave_root, out, media=SMALL_MEDIA)
    assert again.decoded == [] and again.already_done == ["vidA", "vidB", "vidC"]
    assert set(again.failed) == {"vidE", "vidF"}


def test_preprocess_resumes_after_an_interruption(ave_root, tmp_path, monkeypatch):
    import avpet_core.data.ave as ave_module

    out, calls = tmp_path / "cache", []
    real = ave_module.decode_ave_video

    def interrupted(path, *args):
        calls.append(path.stem)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the second video
        return real(path, *args)

    monkeypatch.setattr(ave_module, "decode_ave_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess_ave(ave_root, out, splits=("train", "val"), media=SMALL_MEDIA)
    assert json.loads((out / "manifest.json").read_text())["videos"] == {"vidA": {"status": "done", "file": "vidA.pt"}}
    calls.clear()
    monkeypatch.setattr(
        ave_module, "decode_ave_video", lambda path, *args: calls.append(path.stem) or real(path, *args)
    )
    report = preprocess_ave(ave_root, out, splits=("train", "val"), media=SMALL_MEDIA)
    assert calls == ["vidB", "vidC"] and report.already_done == ["vidA"]


def test_preprocess_can_stop_at_the_first_failure_keeping_what_is_done(ave_root, tmp_path):
    out = tmp_path / "cache"
    with pytest.raises(MediaDecodeError, match="vidE.mp4: no audio track"):
        preprocess_ave(ave_root, out, splits=("val", "test"), media=SMALL_MEDIA, on_error="raise")
    videos = json.loads((out / "manifest.json").read_text())["videos"]
    assert videos["vidC"]["status"] == "done" and videos["vidE"]["status"] == "failed"
    assert (out / "vidC.pt").is_file()
    with pytest.raises(MediaDecodeError, match=r"vidD\.mp4: video file not found"):
        preprocess_ave(ave_root, tmp_path / "other", splits=("train",), media=SMALL_MEDIA, missing="error")


def test_preprocess_refuses_an_unwritable_directory(ave_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CacheError, match="a-file/cache: cache directory is not writable"):
        preprocess_ave(ave_root, blocker / "cache", media=SMALL_MEDIA)


def test_cache_with_other_settings_or_nan_features_is_refused(ave_root, tmp_path):
    out = tmp_path / "cache"
    preprocess_ave(ave_root, out, splits=("val",), media=SMALL_MEDIA)
    with pytest.raises(DatasetFormatError, match=r"manifest\.json: this cache was made with other settings"):
        AVE(ave_root, "val", media=AVEMediaConfig(image_size=64), preprocessed=out)
    stored = torch.load(out / "vidC.pt", weights_only=True)
    stored["fbank"][3, 0, 0] = float("nan")
    torch.save(stored, out / "vidC.pt")
    with pytest.raises(DatasetFormatError, match=r"vidC\.pt: NaN or infinite values in the cached audio features"):
        AVE(ave_root, "val", media=SMALL_MEDIA, preprocessed=out)[0]
    with pytest.raises(MediaDecodeError, match=r"video vidA .* is not in the preprocessed cache"):
        AVE(ave_root, "train", media=SMALL_MEDIA, preprocessed=out, missing="error")
