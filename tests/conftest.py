"""Shared fixtures for the unit tests.

Every test runs with the network blocked (sockets refuse to resolve or connect, the Hugging Face
hub is put in offline mode and pointed at an empty cache), and with the micro-ViT cache pointed at
a per-test temporary directory, so no test can download anything, hang on a retry loop, or read
or write the user's ``~/.cache/avpet``.
"""

from __future__ import annotations

import socket

import pytest
import torch


class NetworkBlocked(OSError):
    """Raised by every socket resolve/connect attempt during the tests."""


def _refuse(*args, **kwargs):
    raise NetworkBlocked("network access is disabled in the unit tests")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path_factory):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:  # huggingface_hub reads its settings at import; patch the live values too
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - timm always brings it
        pass
    else:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path_factory):
    """``$AVPET_CACHE_DIR`` points at a fresh directory; tests that care override it with tmp_path."""
    monkeypatch.setenv("AVPET_CACHE_DIR", str(tmp_path_factory.mktemp("avpet-cache")))


@pytest.fixture(autouse=True)
def restore_torch_state():
    """Tests must not leak thread-count or determinism settings into each other."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def tiny_pretrain_config():
    """A micro-ViT pretraining of a few seconds (8 steps)."""
    from avpet_core.backbones.micro_vit import PretrainConfig

    return PretrainConfig(steps=8, batch_size=8, test_size=32, eval_every=4)


@pytest.fixture
def tiny_text_config():
    """A micro text encoder pretraining of a few seconds (two blocks of width 24, 6 steps, a corpus of
    12 videos and 12 scenes)."""
    from avpet_core.backbones.micro_text import MicroTextConfig, TextPretrainConfig
    from avpet_core.data.synthetic.text import TextCorpusConfig

    return TextPretrainConfig(
        model=MicroTextConfig(width=24, depth=2, num_heads=2, ffn_dim=32, max_length=24),
        corpus=TextCorpusConfig(num_videos=12, num_scenes=12, num_eval_videos=4, num_eval_scenes=4),
        steps=6,
        batch_size=8,
        eval_every=3,
        warmup_steps=2,
    )
