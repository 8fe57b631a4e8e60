"""avpet_core.backbones.micro_vit (tiny configurations only) and avpet_core.data.procedural_images."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from avpet_core.backbones import micro_vit as pretrain
from avpet_core.data.procedural_images import (
    CLASS_NAMES,
    NUM_CLASSES,
    SHAPES,
    TEXTURES,
    ShapesTexturesConfig,
    draw_shapes_textures,
)
from avpet_core.files import CACHE_ENV_VAR
from avpet_core.backbones.micro_vit import (
    cache_paths,
    deterministic_cpu,
    held_out_accuracy,
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
        assert held_out_accuracy(model, config) == record["test_accuracy"]
    assert not model.training  # held_out_accuracy() restores the mode it found


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
# train-or-load (the cache's contract, for both encoders: tests/test_cached_pretraining.py)


def test_loading_keeps_the_head_names_the_file_and_honours_dynamic_img_size(
    monkeypatch, tmp_path, tiny_pretrain_config
):
    """What pretrained_micro_vit adds to the cache contract (tests/test_cached_pretraining.py)."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    pretrained_micro_vit(tiny_pretrain_config, progress=False)
    _forbid_training(monkeypatch)
    dynamic = pretrained_micro_vit(tiny_pretrain_config, progress=False)
    fixed = pretrained_micro_vit(tiny_pretrain_config, progress=False, dynamic_img_size=False)
    assert dynamic.num_classes == fixed.num_classes == NUM_CLASSES
    assert dynamic.pretrained_cfg["file"] == str(cache_paths(tiny_pretrain_config)[0])  # as load_weights records it
    with torch.no_grad():
        assert dynamic.forward_features(torch.rand(1, 3, 128, 96)).shape == (1, 1 + 16 * 12, 96)
        with pytest.raises(AssertionError, match=r"Input height \(128\) doesn't match model \(48\)"):
            fixed.forward_features(torch.rand(1, 3, 128, 96))
        x = torch.rand(1, 3, 48, 48, generator=_gen(1))
        assert torch.equal(dynamic(x), fixed(x))
        assert torch.equal(dynamic.forward_features(x), fixed.forward_features(x))


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
