"""avpet_core.audio: the AST filterbank front end, its input checks, and file loading."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from avpet_core.audio import (
    AST_AUDIOSET,
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    LAVISH_AVE_1S,
    AudioInputError,
    FbankConfig,
    audio_to_image,
    fbank_to_image,
    load_audio,
    prepare_waveform,
    waveform_to_fbank,
)

SR = 16_000
ALL_FRAMES = FbankConfig(target_frames=None)
RAW = FbankConfig(target_frames=None, mean=0.0, std=0.5)  # (fbank - 0) / (2 * 0.5) = raw fbank


def noise(samples: int, seed: int = 0, channels: int | None = None) -> torch.Tensor:
    shape = (samples,) if channels is None else (channels, samples)
    return 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * math.pi * freq * t)).to(torch.float32)


def reference_fbank(wave: torch.Tensor) -> torch.Tensor:
    """The reference note's call, on a mean-subtracted 16 kHz mono waveform."""
    wave = wave - wave.mean()
    return torchaudio.compliance.kaldi.fbank(
        wave.unsqueeze(0),
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )


# --------------------------------------------------------------------------------------------
# shapes and framing


def test_default_config_is_ast_audioset():
    assert AST_AUDIOSET.target_frames == 1024 and AST_AUDIOSET.num_mel_bins == 128
    assert (AST_AUDIOSET.mean, AST_AUDIOSET.std) == (AUDIOSET_MEAN, AUDIOSET_STD)
    assert AST_AUDIOSET.min_samples == 400  # one 25 ms window at 16 kHz
    assert LAVISH_AVE_1S.target_frames == 102


@pytest.mark.parametrize("target_frames", [1024, 102, 7])
def test_fbank_shape_is_target_frames_by_128(target_frames):
    fbank = waveform_to_fbank(noise(SR), SR, FbankConfig(target_frames=target_frames))
    assert fbank.shape == (target_frames, 128)
    assert fbank.dtype == torch.float32
    assert torch.isfinite(fbank).all()


@pytest.mark.parametrize("samples", [400, 401, 559, 560, 16_000, 16_399, 16_400])
def test_frame_count_follows_kaldi_snip_edges(samples):
    fbank = waveform_to_fbank(noise(samples), SR, ALL_FRAMES)
    assert fbank.shape == (1 + (samples - 400) // 160, 128)


def test_short_clip_is_zero_padded_at_the_end_before_normalisation():
    wave = noise(SR)  # 98 frames
    full = waveform_to_fbank(wave, SR, RAW)
    assert full.shape[0] == 98
    padded = waveform_to_fbank(wave, SR, FbankConfig(target_frames=120, mean=0.0, std=0.5))
    assert padded.shape == (120, 128)
    assert torch.equal(padded[:98], full)
    assert torch.equal(padded[98:], torch.zeros(22, 128))
    # with real statistics, padding becomes (0 - mean) / (2 std)
    ast = waveform_to_fbank(wave, SR, FbankConfig(target_frames=120))
    expected_pad = (0.0 - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
    assert torch.allclose(ast[98:], torch.full((22, 128), expected_pad))


def test_long_clip_is_cropped_at_the_end():
    wave = noise(3 * SR)
    full = waveform_to_fbank(wave, SR, ALL_FRAMES)
    cropped = waveform_to_fbank(wave, SR, FbankConfig(target_frames=50))
    assert full.shape[0] == 298
    assert torch.equal(cropped, full[:50])


def test_normalisation_is_affine_in_the_raw_fbank():
    wave = noise(SR, seed=1)
    raw = waveform_to_fbank(wave, SR, RAW)
    for mean, std in [(AUDIOSET_MEAN, AUDIOSET_STD), (-4.1426, 3.2001), (1.5, 0.25)]:
        out = waveform_to_fbank(wave, SR, FbankConfig(target_frames=None, mean=mean, std=std))
        assert torch.allclose(out, (raw - mean) / (2 * std), atol=1e-5)


def test_equals_kaldi_fbank_with_the_reference_arguments():
    wave = noise(2 * SR, seed=2) + 0.3  # a DC offset, which the front end must remove
    expected = reference_fbank(wave)
    assert torch.equal(waveform_to_fbank(wave, SR, RAW), expected)
    expected_ast = (expected - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
    assert torch.allclose(waveform_to_fbank(wave, SR, ALL_FRAMES), expected_ast, atol=1e-6)


def test_resampled_tone_matches_native_tone():
    native = waveform_to_fbank(tone(16_000), 16_000, RAW)
    resampled = waveform_to_fbank(tone(44_100), 44_100, RAW)
    assert native.shape == resampled.shape == (98, 128)
    inner = slice(5, -5)  # the resampler's edge effects
    a, b = native[inner], resampled[inner]
    assert int(a.mean(0).argmax()) == int(b.mean(0).argmax())
    # 440 Hz falls in the low mel bins, well below the middle
    assert int(a.mean(0).argmax()) < 40
    assert (a - b).abs().mean() < 0.01
    assert (a - b).abs().mean() < 0.01 * a.std()


def test_stereo_is_averaged_to_mono():
    left, right = noise(SR, seed=4), noise(SR, seed=5)
    stereo = torch.stack([left, right])
    assert torch.allclose(
        waveform_to_fbank(stereo, SR, ALL_FRAMES), waveform_to_fbank((left + right) / 2, SR, ALL_FRAMES), atol=1e-6
    )
    same = torch.stack([left, left])
    assert torch.equal(waveform_to_fbank(same, SR, ALL_FRAMES), waveform_to_fbank(left, SR, ALL_FRAMES))
    mono_2d = left.unsqueeze(0)
    assert torch.equal(waveform_to_fbank(mono_2d, SR, ALL_FRAMES), waveform_to_fbank(left, SR, ALL_FRAMES))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_input(dtype):
    wave = noise(SR, seed=6)
    out = waveform_to_fbank(wave.numpy().astype(dtype), SR, ALL_FRAMES)
    assert torch.allclose(out, waveform_to_fbank(wave, SR, ALL_FRAMES), atol=1e-6)


def test_non_contiguous_numpy_input():
    wave = noise(SR, seed=7).numpy()
    reversed_view = wave[::-1]
    out = waveform_to_fbank(reversed_view, SR, ALL_FRAMES)
    assert torch.equal(out, waveform_to_fbank(torch.from_numpy(wave[::-1].copy()), SR, ALL_FRAMES))


def test_numpy_integer_sample_rate_is_accepted():
    out = waveform_to_fbank(noise(SR), np.int64(SR), ALL_FRAMES)
    assert out.shape == (98, 128)


def test_silence_is_valid():
    for wave in (torch.zeros(SR), torch.zeros(2, SR)):
        out = waveform_to_fbank(wave, SR, source="silence.wav")
        assert out.shape == (1024, 128)
        assert torch.isfinite(out).all()
    # silence sits at the log floor: one constant value for the real frames
    raw = waveform_to_fbank(torch.zeros(SR), SR, RAW)
    assert torch.unique(raw).numel() == 1
    assert raw[0, 0] < -10  # log(eps)


def test_louder_signal_gives_higher_fbank():
    quiet = waveform_to_fbank(noise(SR, seed=8), SR, RAW)
    loud = waveform_to_fbank(10 * noise(SR, seed=8), SR, RAW)
    # scaling the waveform by 10 multiplies power by 100: + log(100) in every bin above the
    # log(eps) floor (128 mel bins on a 512-point FFT leave a few low mel filters empty)
    floor = math.log(torch.finfo(torch.float32).eps)
    above = quiet > floor + 1.0
    assert above.float().mean() > 0.95
    assert torch.allclose((loud - quiet)[above], torch.tensor(math.log(100.0)), atol=1e-3)
    assert torch.allclose(loud[~above], torch.tensor(floor), atol=1e-4)


# --------------------------------------------------------------------------------------------
# spectrogram images


def test_fbank_to_image_layout():
    fbank = torch.randn(100, 128, generator=torch.Generator().manual_seed(9))
    image = fbank_to_image(fbank)
    assert image.shape == (3, 128, 100)
    assert image.is_contiguous()
    assert torch.equal(image[0], fbank.T)  # rows = mel bins, columns = frames
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_fbank_to_image_keeps_batch_dims_and_channel_count():
    fbank = torch.randn(4, 2, 100, 128, generator=torch.Generator().manual_seed(10))
    image = fbank_to_image(fbank)
    assert image.shape == (4, 2, 3, 128, 100)
    assert torch.equal(image[1, 0, 2], fbank[1, 0].T)
    assert fbank_to_image(fbank[0, 0], channels=1).shape == (1, 128, 100)


def test_fbank_to_image_channels_are_independent_memory():
    image = fbank_to_image(torch.zeros(10, 128))
    image[0, 0, 0] = 1.0
    assert image[1, 0, 0] == 0.0  # contiguous copy, not an expanded view


def test_audio_to_image():
    wave = noise(SR, seed=11)
    image = audio_to_image(wave, SR, LAVISH_AVE_1S)
    assert image.shape == (3, 128, 102)
    assert torch.equal(image, fbank_to_image(waveform_to_fbank(wave, SR, LAVISH_AVE_1S)))


# --------------------------------------------------------------------------------------------
# bad input: AudioInputError naming the source and the problem


BAD_INPUTS = [
    pytest.param(torch.zeros(0), SR, r"the audio is empty \(0 samples\)", id="empty"),
    pytest.param(torch.zeros(2, 0), SR, r"the audio is empty \(0 samples\)", id="empty-stereo"),
    pytest.param(
        torch.cat([torch.zeros(500), torch.tensor([float("nan")]), torch.zeros(500)]),
        SR,
        r"1 of 1001 samples are NaN or infinite \(first at flat index 500\)",
        id="nan",
    ),
    pytest.param(
        torch.cat([torch.zeros(1000), torch.tensor([float("inf"), -float("inf")])]),
        SR,
        r"2 of 1002 samples are NaN or infinite \(first at flat index 1000\)",
        id="inf",
    ),
    pytest.param(
        torch.zeros(16_000, 2),
        SR,
        r"shape \(16000, 2\) looks like \(samples, channels\).*waveform\.T",
        id="samples-channels",
    ),
    pytest.param(
        torch.zeros(2, 2, 1000),
        SR,
        r"expected shape \(samples,\) or \(channels, samples\), got \(2, 2, 1000\)",
        id="3d",
    ),
    pytest.param(torch.zeros(()), SR, r"expected shape \(samples,\) or \(channels, samples\), got \(\)", id="0d"),
    pytest.param(
        torch.zeros(16_000, dtype=torch.int16), SR, r"expected floating-point samples, got torch\.int16", id="int16"
    ),
    pytest.param(
        np.zeros(16_000, dtype=np.int32), SR, r"expected floating-point samples, got torch\.int32", id="numpy-int32"
    ),
    pytest.param(torch.zeros(16_000, dtype=torch.bool), SR, r"expected floating-point samples", id="bool"),
    pytest.param(torch.zeros(16_000), 0, r"sample rate must be a positive integer in Hz, got 0", id="rate-0"),
    pytest.param(
        torch.zeros(16_000), -16_000, r"sample rate must be a positive integer in Hz, got -16000", id="rate-negative"
    ),
    pytest.param(
        torch.zeros(16_000), 16_000.0, r"sample rate must be a positive integer in Hz, got 16000\.0", id="rate-float"
    ),
    pytest.param(
        torch.zeros(16_000), 22_050.5, r"sample rate must be a positive integer in Hz, got 22050\.5", id="rate-fraction"
    ),
    pytest.param(torch.zeros(16_000), True, r"sample rate must be a positive integer in Hz, got True", id="rate-bool"),
    pytest.param(
        torch.zeros(16_000), "16000", r"sample rate must be a positive integer in Hz, got '16000'", id="rate-str"
    ),
    pytest.param(
        torch.zeros(399), SR, r"too short: 399 samples at 16000 Hz, need at least 400 \(25 ms\)", id="too-short"
    ),
    pytest.param(
        torch.zeros(2, 100), SR, r"too short: 100 samples at 16000 Hz, need at least 400", id="too-short-stereo"
    ),
    pytest.param(
        torch.zeros(1000),
        44_100,
        r"too short: 363 samples at 16000 Hz, need at least 400",
        id="too-short-after-resampling",
    ),
    pytest.param([0.0] * 16_000, SR, r"expected a tensor or numpy array, got list", id="list"),
    pytest.param(None, SR, r"expected a tensor or numpy array, got NoneType", id="none"),
]


@pytest.mark.parametrize("waveform, rate, problem", BAD_INPUTS)
def test_bad_input_raises_audio_input_error_naming_the_source(waveform, rate, problem):
    with pytest.raises(AudioInputError, match=rf"^clip\.wav: .*{problem}"):
        waveform_to_fbank(waveform, rate, source="clip.wav")


def test_bad_input_without_source_says_waveform():
    with pytest.raises(AudioInputError, match=r"^waveform: the audio is empty"):
        waveform_to_fbank(torch.zeros(0), SR)


def test_bad_input_through_audio_to_image_names_a_path_source(tmp_path):
    source = tmp_path / "dir" / "speech.flac"
    with pytest.raises(AudioInputError, match=rf"^{re.escape(str(source))}: .*NaN"):
        audio_to_image(torch.full((SR,), float("nan")), SR, source=source)


def test_audio_input_error_is_a_value_error():
    assert issubclass(AudioInputError, ValueError)


def test_exactly_one_window_is_enough():
    assert waveform_to_fbank(noise(400), SR, ALL_FRAMES).shape == (1, 128)
    # 1103 samples at 44.1 kHz resample to 401 samples at 16 kHz
    assert prepare_waveform(noise(1103), 44_100, min_samples=400).numel() >= 400


def test_prepare_waveform_output():
    out = prepare_waveform(noise(SR, channels=2).to(torch.float64), 8_000)
    assert out.dtype == torch.float32 and out.ndim == 1
    assert out.numel() == 2 * SR  # 8 kHz -> 16 kHz doubles the length


def test_object_numpy_array_raises_audio_input_error():
    array = np.array([np.zeros(3), np.zeros(5)], dtype=object)
    with pytest.raises(AudioInputError, match=r"^clip\.wav: expected numeric samples.*object"):
        waveform_to_fbank(array, SR, source="clip.wav")


def test_big_endian_numpy_array_is_read_like_native():
    native = noise(SR).numpy()
    big_endian = native.astype(">f4")
    assert torch.equal(waveform_to_fbank(big_endian, SR), waveform_to_fbank(native, SR))


# --------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("channels", [1, 2])
def test_load_audio_round_trip(tmp_path, channels):
    data = (0.25 * np.random.default_rng(12).standard_normal((SR // 2, channels))).astype(np.float32)
    path = tmp_path / f"clip{channels}.wav"
    soundfile.write(str(path), data, 22_050, subtype="FLOAT")
    wave, rate = load_audio(path)
    assert rate == 22_050
    assert wave.dtype == torch.float32
    assert wave.shape == (channels, SR // 2)  # channels first
    assert torch.equal(wave, torch.from_numpy(data.T.copy()))
    # and it goes straight into the front end
    assert audio_to_image(wave, rate, LAVISH_AVE_1S, source=path).shape == (3, 128, 102)


def test_load_audio_pcm16_is_scaled_to_unit_range(tmp_path):
    data = np.array([0, 16384, -32768, 32767] * 200, dtype=np.int16)
    path = tmp_path / "pcm16.wav"
    soundfile.write(str(path), data, SR, subtype="PCM_16")
    wave, rate = load_audio(str(path))
    assert rate == SR and wave.shape == (1, 800)
    assert wave[0, :4].tolist() == pytest.approx([0.0, 0.5, -1.0, 32767 / 32768])


def test_load_audio_missing_file(tmp_path):
    path = tmp_path / "missing.wav"
    with pytest.raises(AudioInputError, match=rf"^{re.escape(str(path))}: audio file not found"):
        load_audio(path)


def test_load_audio_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(13).bytes(2048))
    with pytest.raises(AudioInputError, match=rf"^{re.escape(str(path))}: cannot decode audio"):
        load_audio(path)


def test_load_audio_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(str(path), np.zeros((0, 1), dtype=np.float32), SR)
    with pytest.raises(AudioInputError, match=rf"^{re.escape(str(path))}: the audio is empty \(0 samples\)"):
        load_audio(path)
