"""Reading media without PyAV or soundfile: one clear error, raised where media is read.

Both packages are dependencies of avpet_core, but a reader's environment can lack one (a conda
environment, ``--no-deps``). ``import avpet_core`` must still work, and reading a file must say
which package is missing and how to install it, not fail with a bare ``ModuleNotFoundError``
from deep inside. A missing package is simulated with ``sys.modules[name] = None`` (which makes
``import name`` raise ModuleNotFoundError); nothing is uninstalled.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fixtures_media import tone, write_mp4, write_wav

from avpet_core.audio import import_media_package, load_audio
from avpet_core.data.media import decode_audio, decode_frames, load_audio_16k_mono, probe_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A short video with an audio track and a stand-alone .wav, written while both packages are there."""
    folder = tmp_path_factory.mktemp("media")
    return {
        "mp4": write_mp4(folder / "clip.mp4", seconds=2),
        "wav": write_wav(folder / "clip.wav", tone(1.0, 16_000), 16_000),
    }


def _without(monkeypatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, name, None)


def test_importing_the_library_needs_neither_package():
    code = (
        "import sys; sys.modules['av'] = None; sys.modules['soundfile'] = None\n"
        "import avpet_core, avpet_core.audio, avpet_core.data.media, avpet_core.data.ave, avpet_core.cli\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "ok"


@pytest.mark.parametrize(
    "read",
    [
        lambda m: decode_frames(m["mp4"], [0.5]),
        lambda m: probe_video(m["mp4"]),
        lambda m: decode_audio(m["mp4"]),
        lambda m: load_audio_16k_mono(m["mp4"]),
    ],
    ids=["decode_frames", "probe_video", "decode_audio", "load_audio_16k_mono"],
)
def test_reading_a_video_without_pyav_says_to_install_it(read, media, monkeypatch):
    _without(monkeypatch, "av")
    with pytest.raises(
        ModuleNotFoundError, match=r"needs PyAV \(the 'av' package\), which is not installed.*: pip install av$"
    ) as info:
        read(media)
    assert info.value.name == "av"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)  # the original error is kept


@pytest.mark.parametrize(
    "read",
    [lambda path: load_audio(path), lambda path: decode_audio(path), lambda path: load_audio_16k_mono(path)],
    ids=["load_audio", "decode_audio", "load_audio_16k_mono"],
)
def test_reading_a_wav_without_soundfile_says_to_install_it(read, media, monkeypatch):
    _without(monkeypatch, "soundfile")
    with pytest.raises(
        ModuleNotFoundError,
        match=r"needs soundfile \(the 'soundfile' package\), which is not installed.*: pip install soundfile$",
    ) as info:
        read(media["wav"])
    assert info.value.name == "soundfile"


def test_a_wav_is_read_without_pyav(media, monkeypatch):
    _without(monkeypatch, "av")
    assert load_audio_16k_mono(media["wav"]).shape == (16_000,)  # .wav goes through soundfile only


def test_a_video_is_read_without_soundfile(media, monkeypatch):
    _without(monkeypatch, "soundfile")
    assert decode_frames(media["mp4"], [0.5]).shape[0] == 1  # video goes through PyAV only
    assert decode_audio(media["mp4"])[0].shape[0] == 2  # and so does its audio track


def test_a_broken_install_is_not_reported_as_missing(tmp_path, monkeypatch):
    """A package that is there but whose own import fails gets 'reinstall', with the missing module's name."""
    package = tmp_path / "av"
    package.mkdir()
    (package / "__init__.py").write_text("import avpet_test_no_such_module_xyz\n")
    monkeypatch.delitem(sys.modules, "av", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ModuleNotFoundError, match=r"installed but cannot be imported .*pip install --force-reinstall av$"
    ) as info:
        import_media_package("av")
    assert info.value.name == "avpet_test_no_such_module_xyz"


def test_only_the_media_packages_are_imported_this_way():
    with pytest.raises(KeyError):
        import_media_package("numpy")
