"""avpet_core.backbones.micro_vit (tiny configurations only) and avpet_core.data.procedural_images."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest
import torch

from avpet_core.backbones import micro_vit as pretrain
from avpet_core.backbones import BackboneError, MicroViTConfig
from avpet_core.data.procedural_images import (
    CLASS_NAMES,
    NUM_CLASSES,
    SHAPES,
    TEXTURES,
    ShapesTexturesConfig,
    draw_shapes_textures,
)
from avpet_core.files import CACHE_ENV_VAR, CacheError, atomic_write_bytes, cache_dir, ensure_writable
from avpet_core.backbones.micro_vit import (
    PretrainConfig,
    cache_paths,
    deterministic_cpu,
    evaluate,
    pretrain_micro_vit,
    pretrained_micro_vit,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("pretrain_micro_vit must not be called here")

    monkeypatch.setattr(pretrain, "pretrain_micro_vit", fail)


# --------------------------------------------------------------------------------------------
# training


def test_tiny_pretraining_runs_and_records(tiny_pretrain_config):
    config = tiny_pretrain_config
    model, record = pretrain_micro_vit(config, progress=False)
    assert model.num_classes == NUM_CLASSES == 16
    assert not model.training  # returned in eval mode
    assert all(p.requires_grad for p in model.parameters())  # a trained classifier, not frozen
    assert [h["step"] for h in record["history"]] == [4, 8]
    assert record["test_accuracy"] == record["history"][-1]["test_accuracy"]
    assert 0.0 <= record["test_accuracy"] <= 1.0
    # accuracies are fractions of the 32 test images
    assert all((h["test_accuracy"] * config.test_size).is_integer() for h in record["history"])
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in record["history"])
    assert record["config"] == dataclasses.asdict(config)
    assert record["num_threads"] == config.num_threads
    assert record["torch_version"] == torch.__version__
    json.dumps(record)  # the record is what gets cached as JSON
    with deterministic_cpu(config.num_threads):  # the numerics of the evaluation inside training
        assert evaluate(model, config) == record["test_accuracy"]
    assert not model.training  # evaluate() restores the mode it found


def test_pretraining_actually_changes_the_weights(tiny_pretrain_config):
    from avpet_core.backbones import build_micro_vit

    model, _ = pretrain_micro_vit(tiny_pretrain_config, progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny_pretrain_config.seed)
        initial = build_micro_vit(tiny_pretrain_config.model, num_classes=NUM_CLASSES)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, initial.state_dict()[k])]
    assert "head.weight" in changed and "blocks.0.attn.qkv.weight" in changed


def test_pretraining_is_deterministic(tiny_pretrain_config):
    first, record1 = pretrain_micro_vit(tiny_pretrain_config, progress=False)
    second, record2 = pretrain_micro_vit(tiny_pretrain_config, progress=False)
    s1, s2 = first.state_dict(), second.state_dict()
    assert s1.keys() == s2.keys()
    for key in s1:
        assert torch.equal(s1[key], s2[key]), key
    assert record1["history"] == record2["history"]


def test_different_seed_gives_different_weights(tiny_pretrain_config):
    a, _ = pretrain_micro_vit(tiny_pretrain_config, progress=False)
    b, _ = pretrain_micro_vit(dataclasses.replace(tiny_pretrain_config, seed=1), progress=False)
    assert not torch.equal(a.state_dict()["head.weight"], b.state_dict()["head.weight"])


def test_pretraining_does_not_disturb_the_global_rng(tiny_pretrain_config):
    torch.manual_seed(1234)
    pretrain_micro_vit(tiny_pretrain_config, progress=False)
    after_training = torch.rand(5)
    torch.manual_seed(1234)
    untouched = torch.rand(5)
    assert torch.equal(after_training, untouched)


def test_pretraining_restores_threads_and_determinism_flag(tiny_pretrain_config):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)
    pretrain_micro_vit(dataclasses.replace(tiny_pretrain_config, num_threads=2), progress=False)
    assert torch.get_num_threads() == 1
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_cpu_sets_and_restores_even_on_error():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)
    with pytest.raises(RuntimeError, match="inside"):
        with deterministic_cpu(2):
            assert torch.get_num_threads() == 2
            assert torch.are_deterministic_algorithms_enabled()
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 1
    assert not torch.are_deterministic_algorithms_enabled()


def test_test_set_is_fixed_and_separate_from_training_data(tiny_pretrain_config):
    images, labels = pretrain.test_set(tiny_pretrain_config)
    again, labels_again = pretrain.test_set(tiny_pretrain_config)
    assert images.shape == (32, 3, 48, 48) and torch.equal(images, again) and torch.equal(labels, labels_again)
    first_batch, _ = draw_shapes_textures(32, _gen(tiny_pretrain_config.seed + 1), tiny_pretrain_config.images)
    assert not torch.equal(images, first_batch)


# --------------------------------------------------------------------------------------------
# train-or-load cache


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert cache_dir() == pretrain.Path.home() / ".cache" / "avpet"
    monkeypatch.setenv(CACHE_ENV_VAR, "")
    assert cache_dir() == pretrain.Path.home() / ".cache" / "avpet"


def test_train_then_load(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    config = tiny_pretrain_config
    weights, record_path = cache_paths(config)
    assert weights.parent == tmp_path and record_path.parent == tmp_path
    assert weights.name == f"micro_vit-{config.key()}.safetensors"
    assert record_path.name == f"micro_vit-{config.key()}.json"

    first = pretrained_micro_vit(config, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weights.name, record_path.name])
    record = json.loads(record_path.read_text())
    assert record["test_accuracy"] == first.pretraining["test_accuracy"]
    assert record["history"] == first.pretraining["history"]
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        assert handle.metadata() == {"config_key": config.key()}
        assert set(handle.keys()) == set(first.state_dict())

    _forbid_training(monkeypatch)
    second = pretrained_micro_vit(config, progress=False)
    assert not first.training and not second.training
    assert second.num_classes == NUM_CLASSES
    assert second.pretraining == record
    x = torch.rand(4, 3, 48, 48, generator=_gen(0))
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
        assert torch.equal(first.forward_features(x), second.forward_features(x))


def test_fresh_training_and_cache_give_the_same_model_as_pretrain(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    trained, _ = pretrain_micro_vit(tiny_pretrain_config, progress=False)
    cached = pretrained_micro_vit(tiny_pretrain_config, progress=False)
    for key, value in trained.state_dict().items():
        assert torch.equal(cached.state_dict()[key], value), key


def test_retrain_trains_again(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    real = pretrain.pretrain_micro_vit
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "pretrain_micro_vit", counting)
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    assert len(calls) == 1
    pretrained_micro_vit(tiny_pretrain_config, progress=False, retrain=True)
    assert len(calls) == 2


def test_missing_record_retrains(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    _, record_path = cache_paths(tiny_pretrain_config)
    record_path.unlink()
    _forbid_training(monkeypatch)
    with pytest.raises(AssertionError, match="must not be called"):
        pretrained_micro_vit(tiny_pretrain_config, progress=False)


def test_corrupt_cached_record_raises_cache_error(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    _, record_path = cache_paths(tiny_pretrain_config)
    record_path.write_text("{not json")
    _forbid_training(monkeypatch)
    with pytest.raises(CacheError, match=rf"{re.escape(str(record_path))}: unreadable pretraining record.*delete it to retrain"):
        pretrained_micro_vit(tiny_pretrain_config, progress=False)


def test_corrupt_cached_weights_raise_backbone_error(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    weights, _ = cache_paths(tiny_pretrain_config)
    weights.write_bytes(random.Random(0).randbytes(256))
    _forbid_training(monkeypatch)
    with pytest.raises(BackboneError, match=rf"{re.escape(str(weights))}: not a readable weights file"):
        pretrained_micro_vit(tiny_pretrain_config, progress=False)


def test_dynamic_img_size_flag_is_honoured_when_loading(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    dynamic = pretrained_micro_vit(tiny_pretrain_config, progress=False)
    fixed = pretrained_micro_vit(tiny_pretrain_config, progress=False, dynamic_img_size=False)
    with torch.no_grad():
        assert dynamic.forward_features(torch.rand(1, 3, 128, 96)).shape == (1, 1 + 16 * 12, 96)
        with pytest.raises(AssertionError, match=r"Input height \(128\) doesn't match model \(48\)"):
            fixed.forward_features(torch.rand(1, 3, 128, 96))
        x = torch.rand(1, 3, 48, 48, generator=_gen(1))
        assert torch.equal(dynamic(x), fixed(x))


def test_fresh_and_cached_calls_advance_the_global_rng_alike(monkeypatch, tmp_path, tiny_pretrain_config):
    """Notebooks downstream of pretrained_micro_vit() see the same random numbers, cache or not."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    torch.manual_seed(99)
    pretrained_micro_vit(tiny_pretrain_config, progress=False)  # trains
    after_fresh = torch.rand(4)
    torch.manual_seed(99)
    pretrained_micro_vit(tiny_pretrain_config, progress=False)  # loads
    after_cached = torch.rand(4)
    assert torch.equal(after_fresh, after_cached)


def test_non_writable_cache_dir_fails_before_training(monkeypatch, tmp_path, tiny_pretrain_config):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, so nothing can be created below it (even as root)")
    target = blocker / "sub"
    monkeypatch.setenv(CACHE_ENV_VAR, str(target))
    _forbid_training(monkeypatch)
    with pytest.raises(CacheError, match=rf"^{re.escape(str(target))}: cache directory is not writable .*set {CACHE_ENV_VAR}"):
        pretrained_micro_vit(tiny_pretrain_config, progress=False)
    assert issubclass(CacheError, OSError)


def test_ensure_writable_creates_the_directory_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert ensure_writable(target) == target
    assert target.is_dir()
    assert list(target.iterdir()) == []


def _vary(value):
    """A different value of the same kind, for every field type in the configs."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, tuple):
        return tuple(v + 0.1 for v in value)
    raise TypeError(value)


def _variants(config):
    """(field path, varied config) for every leaf field of a (nested) frozen dataclass."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            for path, inner in _variants(value):
                yield f"{f.name}.{path}", dataclasses.replace(config, **{f.name: inner})
        else:
            yield f.name, dataclasses.replace(config, **{f.name: _vary(value)})


def test_config_key_is_stable_and_changes_with_every_setting():
    base = PretrainConfig()
    assert base.key() == PretrainConfig().key()
    assert re.fullmatch(r"[0-9a-f]{12}", base.key())
    variants = list(_variants(base))
    names = {name for name, _ in variants}
    assert {"steps", "seed", "lr", "model.depth", "model.mean", "images.noise_std", "num_threads"} <= names
    assert len(variants) == len(dataclasses.fields(PretrainConfig)) - 2 + len(dataclasses.fields(MicroViTConfig)) + len(
        dataclasses.fields(ShapesTexturesConfig)
    )
    keys = {base.key()}
    for name, variant in variants:
        assert variant.key() != base.key(), name
        assert cache_paths(variant)[0] != cache_paths(base)[0], name
        keys.add(variant.key())
    assert len(keys) == len(variants) + 1


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


# --------------------------------------------------------------------------------------------
# procedural images


def test_class_names():
    assert NUM_CLASSES == len(SHAPES) * len(TEXTURES) == 16
    assert len(set(CLASS_NAMES)) == 16
    assert CLASS_NAMES[1 * len(TEXTURES) + 2] == f"{SHAPES[1]}/{TEXTURES[2]}"


def test_draw_shapes_textures_shapes_dtypes_range():
    images, labels = draw_shapes_textures(64, _gen(0))
    assert images.shape == (64, 3, 48, 48) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.min() == 0.0 or images.max() == 1.0 or images.std() > 0.1  # not a flat image
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES
    small, _ = draw_shapes_textures(3, _gen(0), ShapesTexturesConfig(image_size=20))
    assert small.shape == (3, 3, 20, 20)


def test_draw_shapes_textures_is_deterministic_by_seed():
    a_images, a_labels = draw_shapes_textures(16, _gen(5))
    b_images, b_labels = draw_shapes_textures(16, _gen(5))
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    c_images, _ = draw_shapes_textures(16, _gen(6))
    assert not torch.equal(a_images, c_images)


def test_draw_shapes_textures_does_not_use_the_global_rng():
    torch.manual_seed(0)
    draw_shapes_textures(8, _gen(1))
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_labels_cover_every_class():
    _, labels = draw_shapes_textures(512, _gen(2))
    assert set(labels.tolist()) == set(range(NUM_CLASSES))
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    assert counts.min() > 10  # roughly uniform (expected 32 each)


def test_every_class_is_drawable():
    """Without noise or distractors: solid shapes use 2 colours, textured shapes 3; never a blank image."""
    config = ShapesTexturesConfig(noise_std=0.0, num_distractors=0)
    images, labels = draw_shapes_textures(320, _gen(3), config)
    flat = images.permute(0, 2, 3, 1).reshape(len(images), -1, 3)
    for label in range(NUM_CLASSES):
        texture = TEXTURES[label % len(TEXTURES)]
        index = (labels == label).nonzero().flatten()
        assert len(index) > 0, CLASS_NAMES[label]
        for i in index.tolist():
            colours = torch.unique(flat[i], dim=0)
            background = flat[i][0]  # the top-left corner is never inside the shape
            foreground_share = (flat[i] != background).any(-1).float().mean()
            assert 0.03 < foreground_share < 0.7, (CLASS_NAMES[label], float(foreground_share))
            if texture == "solid":
                assert len(colours) == 2, CLASS_NAMES[label]
            else:
                assert len(colours) == 3, CLASS_NAMES[label]


def test_cache_key_holds_the_numeric_environment(monkeypatch, tmp_path, tiny_pretrain_config):
    """A model cached under other CPU code paths (an unpinned run, another vendor) is never loaded."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    pinned_key = tiny_pretrain_config.key()
    monkeypatch.setattr(pretrain, "environment_key", lambda: "elsewhere")
    assert tiny_pretrain_config.key() != pinned_key
    calls = []
    real = pretrain.pretrain_micro_vit
    monkeypatch.setattr(pretrain, "pretrain_micro_vit", lambda *a, **k: calls.append(1) or real(*a, **k))
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    assert calls == [1], "a cache made in another numeric environment was loaded"


def test_pretraining_record_says_what_it_was_trained_under(monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    record = pretrained_micro_vit(tiny_pretrain_config, progress=False).pretraining
    environment = record["numeric_environment"]
    assert environment["threads"] == tiny_pretrain_config.num_threads == 1
    assert environment["deterministic"] is True
    assert {"torch", "cpu_vendor", "cpu_capability", "mkl_cbwr", "onednn_max_cpu_isa", "pinned"} <= set(environment)
