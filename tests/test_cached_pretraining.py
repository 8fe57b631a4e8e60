"""The train-or-load cache of the pretrained backbones (avpet_core.backbones.cached): one contract,
checked for both encoders that use it, the micro-ViT and the micro text encoder (tiny
configurations only); the book's own cache keys, pinned; and the files beneath the cache
(avpet_core.files)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from avpet_core.backbones import BackboneError, cached, micro_text, micro_vit
from avpet_core.backbones.cached import cache_paths
from avpet_core.backbones.micro_text import TextPretrainConfig, WordTokenizer
from avpet_core.backbones.micro_vit import PretrainConfig
from avpet_core.data.synthetic.text import TextCorpusConfig
from avpet_core.files import (
    CACHE_ENV_VAR,
    CacheError,
    atomic_write_bytes,
    cache_dir,
    config_hash,
    ensure_writable,
    short_hash,
)


@dataclass(frozen=True)
class Encoder:
    """One user of the cache, as the contract tests drive it."""

    name: str  # its configurations' cache_name
    module: ModuleType  # where its training function lives (patched to count or forbid training)
    train: str  # the name of that function: (config, progress=...) -> (model, record)
    pretrained: Callable  # its train-or-load function, giving the whole trained model (head included)
    fixture: str  # the conftest fixture of its tiny configuration (seconds to train)
    inputs: Callable[[], tuple]  # a batch to compare two models' outputs on: model(*inputs())
    settings: tuple[str, ...]  # fields the key must hold (among all, which are checked too)
    config: object = None  # that tiny configuration (the encoder fixture fills it in)


def _images() -> tuple[torch.Tensor]:
    return (torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0)),)


def _questions() -> tuple[torch.Tensor, torch.Tensor]:
    texts = ["Is the drum louder than the bell?", "How many instruments can be heard in the video?"]
    return WordTokenizer().encode(texts, 16)


ENCODERS = {
    "micro_vit": Encoder(
        "micro_vit",
        micro_vit,
        "pretrain_micro_vit",
        micro_vit.pretrained_micro_vit,
        "tiny_pretrain_config",
        _images,
        ("steps", "seed", "lr", "model.depth", "model.mean", "images.noise_std", "num_threads"),
    ),
    "micro_text": Encoder(
        "micro_text",
        micro_text,
        "pretrain_micro_text",
        micro_text.pretrained_micro_text_mlm,
        "tiny_text_config",
        _questions,
        ("steps", "seed", "mask_probability", "model.depth", "corpus.seed", "num_threads"),
    ),
}


@pytest.fixture(params=list(ENCODERS.values()), ids=list(ENCODERS))
def encoder(request, monkeypatch, tmp_path) -> Encoder:
    """Each encoder in turn, with its tiny configuration, its cache in ``tmp_path``."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    return dataclasses.replace(request.param, config=request.getfixturevalue(request.param.fixture))


def _load(encoder: Encoder, **kwargs):
    return encoder.pretrained(encoder.config, progress=False, **kwargs)


def _count_training(monkeypatch, encoder: Encoder) -> list:
    """Training still runs; each run appends to the list returned."""
    real, calls = getattr(encoder.module, encoder.train), []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder.module, encoder.train, counting)
    return calls


def _forbid_training(monkeypatch, encoder: Encoder) -> None:
    def fail(*args, **kwargs):
        raise AssertionError(f"{encoder.train} must not be called here")

    monkeypatch.setattr(encoder.module, encoder.train, fail)


def _assert_same_model(a, b, inputs: tuple) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(a(*inputs), b(*inputs))


# --------------------------------------------------------------------------------------------
# the contract, for each encoder


def test_cache_files_are_named_by_the_model_and_its_key(encoder, tmp_path):
    config = encoder.config
    weights, record = cache_paths(config)
    assert weights.parent == record.parent == tmp_path
    assert weights.name == f"{encoder.name}-{config.key()}.safetensors"
    assert record.name == f"{encoder.name}-{config.key()}.json"
    assert cache_paths(config, tmp_path / "elsewhere")[0] == tmp_path / "elsewhere" / weights.name
    assert encoder.module.cache_paths is cache_paths  # one function, still importable from each module


def test_a_miss_trains_and_writes_both_files_then_a_hit_loads_the_same_model(encoder, monkeypatch, tmp_path):
    config = encoder.config
    weights, record_path = cache_paths(config)
    calls = _count_training(monkeypatch, encoder)
    first = _load(encoder)
    assert calls == [1] and not first.training
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights.name, record_path.name])
    record = json.loads(record_path.read_text())
    assert record == first.pretraining  # a fresh run gives the record as a cache hit reads it
    with safe_open(str(weights), "pt") as handle:
        assert handle.metadata() == {"config_key": config.key()}
        assert set(handle.keys()) == set(first.state_dict())  # the whole model, its head included

    _forbid_training(monkeypatch, encoder)
    second = _load(encoder)
    assert not second.training
    assert second.pretraining == record
    _assert_same_model(first, second, encoder.inputs())


def test_the_cached_model_is_the_trained_one_bit_for_bit(encoder):
    trained, _ = getattr(encoder.module, encoder.train)(encoder.config, progress=False)
    _assert_same_model(trained, _load(encoder), encoder.inputs())


def test_retrain_trains_again(encoder, monkeypatch):
    calls = _count_training(monkeypatch, encoder)
    first = _load(encoder)
    _load(encoder)
    assert len(calls) == 1
    again = _load(encoder, retrain=True)
    assert len(calls) == 2
    _assert_same_model(first, again, encoder.inputs())  # training is deterministic


@pytest.mark.parametrize("lost", [0, 1], ids=["weights", "record"])
def test_a_missing_file_trains_again(encoder, monkeypatch, lost):
    _load(encoder)
    paths = cache_paths(encoder.config)
    paths[lost].unlink()
    calls = _count_training(monkeypatch, encoder)
    _load(encoder)
    assert calls == [1] and all(path.is_file() for path in paths)


def test_an_unreadable_record_raises_cache_error_naming_it(encoder, monkeypatch):
    _load(encoder)
    _, record_path = cache_paths(encoder.config)
    record_path.write_text("{not json")
    _forbid_training(monkeypatch, encoder)
    with pytest.raises(
        CacheError,
        match=rf"^{re.escape(str(record_path))}: unreadable pretraining record.*"
        "delete it to retrain",
    ):
        _load(encoder)


def test_unreadable_weights_raise_backbone_error_naming_them(encoder, monkeypatch):
    _load(encoder)
    weights, _ = cache_paths(encoder.config)
    whole = weights.read_bytes()
    _forbid_training(monkeypatch, encoder)
    for content in (random.Random(0).randbytes(256), b"\x00" * 64, whole[: len(whole) // 2]):
        weights.write_bytes(content)
        with pytest.raises(BackboneError, match=rf"^{re.escape(str(weights))}: not a readable weights file"):
            _load(encoder)


def test_weights_that_do_not_fit_raise_backbone_error_naming_them(encoder, monkeypatch):
    model = _load(encoder)
    weights, _ = cache_paths(encoder.config)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    dropped, reshaped = list(state)[:2]
    del state[dropped]
    state[reshaped] = torch.zeros(3)
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    _forbid_training(monkeypatch, encoder)
    message = (
        rf"^{re.escape(str(weights))}: weights do not fit {encoder.name} \(missing \['{re.escape(dropped)}'\], "
        rf"unexpected \['extra\.weight'\], other shape \['{re.escape(reshaped)}'\]\); delete it to retrain$"
    )
    with pytest.raises(BackboneError, match=message):
        _load(encoder)


def test_fresh_and_cached_calls_advance_the_global_rng_alike(encoder):
    """Code downstream of a train-or-load call sees the same random numbers, cache hit or not."""
    torch.manual_seed(99)
    _load(encoder)  # trains
    after_fresh = torch.rand(4)
    torch.manual_seed(99)
    _load(encoder)  # loads
    assert torch.equal(torch.rand(4), after_fresh)


def test_an_unwritable_cache_fails_before_training(encoder, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, so nothing can be created below it (even as root)")
    target = blocker / "sub"
    monkeypatch.setenv(CACHE_ENV_VAR, str(target))
    _forbid_training(monkeypatch, encoder)
    with pytest.raises(
        CacheError,
        match=rf"^{re.escape(str(target))}: cache directory is not writable .*"
        rf"set {CACHE_ENV_VAR}",
    ):
        _load(encoder)
    assert issubclass(CacheError, OSError)


def test_the_record_says_what_it_was_trained_under(encoder):
    record = _load(encoder).pretraining
    assert record["config"] == json.loads(json.dumps(dataclasses.asdict(encoder.config)))  # tuples read as lists
    assert record["num_threads"] == encoder.config.num_threads
    assert record["torch_version"] == torch.__version__
    environment = record["numeric_environment"]
    assert environment["threads"] == encoder.config.num_threads == 1
    assert environment["deterministic"] is True
    assert {"torch", "cpu_vendor", "cpu_capability", "mkl_cbwr", "onednn_max_cpu_isa", "pinned"} <= set(environment)


# --------------------------------------------------------------------------------------------
# the key


def _vary(value, step: int):
    """A different value of the same kind (``step`` = 1, 2, ... gives others), for every field type in the configs."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + step
    if isinstance(value, float):
        return value * 2 + 0.5 * step
    if isinstance(value, tuple):
        return tuple(v + 0.1 * step for v in value)
    raise TypeError(value)


def _replaced(config, name: str, value):
    """``config`` with one leaf field changed; the first of a few variants its checks accept (a width
    must stay a multiple of the heads)."""
    for step in range(1, 10):
        try:
            return dataclasses.replace(config, **{name: _vary(value, step)})
        except ValueError:
            continue
    raise AssertionError(f"no valid variant of {name}={value!r}")


def _variants(config):
    """(field path, varied config) for every leaf field of a (nested) frozen dataclass."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            for path, inner in _variants(value):
                yield f"{f.name}.{path}", dataclasses.replace(config, **{f.name: inner})
        else:
            yield f.name, _replaced(config, f.name, value)


def _leaf_fields(config_type) -> int:
    return sum(
        _leaf_fields(f.default_factory) if f.default_factory is not dataclasses.MISSING else 1
        for f in dataclasses.fields(config_type)
    )


def test_the_key_is_stable_and_changes_with_every_setting(encoder):
    base = encoder.config
    assert base.key() == dataclasses.replace(base).key()
    assert re.fullmatch(r"[0-9a-f]{12}", base.key())
    variants = list(_variants(base))
    assert set(encoder.settings) <= {name for name, _ in variants}
    assert len(variants) == _leaf_fields(type(base))
    keys = {base.key()}
    for name, variant in variants:
        assert variant.key() != base.key(), name
        assert cache_paths(variant)[0] != cache_paths(base)[0], name
        keys.add(variant.key())
    assert len(keys) == len(variants) + 1


def test_the_key_holds_the_numeric_environment(encoder, monkeypatch):
    """A model cached under other CPU code paths (an unpinned run, another vendor) is never loaded."""
    _load(encoder)
    pinned_key = encoder.config.key()
    monkeypatch.setattr(cached, "environment_key", lambda: "elsewhere")
    assert encoder.config.key() != pinned_key
    calls = _count_training(monkeypatch, encoder)
    _load(encoder)
    assert calls == [1], "a cache made in another numeric environment was loaded"


def test_the_micro_text_key_holds_the_vocabulary(monkeypatch, tiny_text_config):
    base = tiny_text_config.key()
    monkeypatch.setattr(micro_text, "vocabulary_key", lambda tokenizer: "other words")
    assert tiny_text_config.key() != base


# The environment key of a pinned run with torch 2.11.0+cu130 on an AMD processor (ATen AVX2,
# MKL_CBWR=AVX2,STRICT, oneDNN AVX2, one thread), the one the cached backbones below were written under:
# fixed here, so that the keys are checked on every machine.
BOOK_ENVIRONMENT = "6c5f837c"


def test_the_books_cache_keys_do_not_change(monkeypatch, tiny_pretrain_config, tiny_text_config):
    """Renaming, reordering or rehashing anything in a key would orphan every cached backbone."""
    monkeypatch.setattr(cached, "environment_key", lambda: BOOK_ENVIRONMENT)
    assert PretrainConfig().key() == "a139fd912be9"
    assert TextPretrainConfig().key() == "c85e0593153c"
    assert [p.name for p in cache_paths(PretrainConfig())] == [
        "micro_vit-a139fd912be9.safetensors",
        "micro_vit-a139fd912be9.json",
    ]
    assert [p.name for p in cache_paths(TextPretrainConfig())] == [
        "micro_text-c85e0593153c.safetensors",
        "micro_text-c85e0593153c.json",
    ]
    assert (tiny_pretrain_config.key(), tiny_text_config.key()) == ("dac557d938ca", "6cbbd18328fa")  # the tests' own


def test_the_key_is_config_hash_of_the_fields_the_vocabulary_and_the_environment():
    environment = cached.environment_key()
    assert PretrainConfig().key() == config_hash(
        {**dataclasses.asdict(PretrainConfig()), "numeric_environment": environment}
    )
    vocabulary = micro_text.vocabulary_key(WordTokenizer())
    assert vocabulary == short_hash("\n".join(WordTokenizer().tokens))
    assert TextPretrainConfig().key() == config_hash(
        {**dataclasses.asdict(TextPretrainConfig()), "vocabulary": vocabulary, "numeric_environment": environment}
    )


# --------------------------------------------------------------------------------------------
# the files beneath the cache (avpet_core.files)


def test_config_hash_is_the_short_sha256_of_the_sorted_json(tiny_pretrain_config):
    fields = {"b": 1, "a": [0.5, "x"], "c": {"z": None, "y": True}}
    expected = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    assert config_hash(fields) == expected[:12] and config_hash(fields, 8) == expected[:8]
    assert config_hash(dict(reversed(list(fields.items())))) == config_hash(fields)
    assert config_hash(tiny_pretrain_config) == config_hash(dataclasses.asdict(tiny_pretrain_config))
    assert config_hash({"path": cache_dir()}) == config_hash({"path": str(cache_dir())})  # not JSON: str()
    assert short_hash("words") == hashlib.sha256(b"words").hexdigest()[:12]


def test_the_data_caches_keys_do_not_change(monkeypatch, tiny_text_config):
    """The synthetic data's keys and the numeric environment's (all config_hash), pinned: rehashing
    them would orphan every cached split and backbone."""
    from avpet_core import reproducibility
    from avpet_core.data.synthetic import SynthAVEConfig, SynthAVQAConfig
    from avpet_core.data.synthetic.cache import config_key

    assert (TextCorpusConfig().key(), tiny_text_config.corpus.key()) == ("9dd444541a22", "af479e7727fb")
    assert SynthAVEConfig().key() == config_key(SynthAVEConfig()) == "57137088aa32"
    assert SynthAVEConfig(num_videos=8).key() == "031562e41c5e"
    assert config_key(SynthAVQAConfig()) == "9e1c85e06297"
    book = {
        "torch": "2.11.0+cu130",
        "cpu_vendor": "AuthenticAMD",
        "cpu_capability": "AVX2",
        "mkl_cbwr": "AVX2,STRICT",
        "onednn_max_cpu_isa": "AVX2",
        "pinned": True,
    }
    monkeypatch.setattr(reproducibility, "numeric_environment", lambda: book)
    assert reproducibility.environment_key() == BOOK_ENVIRONMENT


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert cache_dir() == Path.home() / ".cache" / "avpet"
    monkeypatch.setenv(CACHE_ENV_VAR, "")
    assert cache_dir() == Path.home() / ".cache" / "avpet"


def test_ensure_writable_creates_the_directory_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert ensure_writable(target) == target
    assert target.is_dir()
    assert list(target.iterdir()) == []


def test_atomic_write_bytes_writes_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "data.bin"
    atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write_bytes(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_atomic_write_bytes_failure_keeps_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "data.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "text is not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]
