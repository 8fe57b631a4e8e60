"""avpet_core.backbones: creation by name, freezing, dynamic input sizes, local weights files."""

from __future__ import annotations

import random
import re

import pytest
import torch
from safetensors.torch import save_file

from avpet_core.backbones import (
    MICRO_VIT,
    BackboneError,
    MicroViTConfig,
    build_micro_vit,
    create_backbone,
    freeze_module,
    load_weights,
    normalise_images,
    patch_grid,
    read_state_dict,
)

TINY_VIT = "vit_tiny_patch16_224"
TINY_KW = {"depth": 2}  # keeps the timm ViT small and fast


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _save(state: dict[str, torch.Tensor], path) -> None:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


def _features(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.forward_features(x)


# --------------------------------------------------------------------------------------------
# creation by name


def test_micro_vit_by_name_matches_its_config():
    cfg = MicroViTConfig()
    model = create_backbone(MICRO_VIT)
    assert model.embed_dim == cfg.embed_dim == 96
    assert len(model.blocks) == cfg.depth
    assert model.patch_embed.patch_size == (cfg.patch_size, cfg.patch_size)
    assert model.num_classes == 0
    assert model.cls_token is not None
    assert model.pretrained_cfg["architecture"] == MICRO_VIT
    assert tuple(model.pretrained_cfg["mean"]) == cfg.mean
    out = model(torch.rand(2, 3, 48, 48))
    assert out.shape == (2, cfg.embed_dim)  # no head: pooled features


def test_micro_vit_with_head():
    model = create_backbone(MICRO_VIT, num_classes=7)
    assert model(torch.rand(1, 3, 48, 48)).shape == (1, 7)


def test_tiny_timm_vit_by_name():
    model = create_backbone(TINY_VIT, **TINY_KW)
    assert model.embed_dim == 192
    assert len(model.blocks) == 2
    assert model.num_classes == 0
    assert model.patch_embed.patch_size == (16, 16)
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 192)


def test_timm_kwargs_are_passed_through():
    model = create_backbone(TINY_VIT, depth=2, drop_path_rate=0.1)
    assert len(model.blocks) == 2
    assert model.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)  # linear schedule 0 -> 0.1


@pytest.mark.parametrize(
    "typo, suggestion",
    [("vitt_tiny_patch16_224", "vit_tiny_patch16_224"), ("micro-vit", MICRO_VIT)],
)
def test_unknown_name_raises_with_suggestion(typo, suggestion):
    with pytest.raises(
        BackboneError, match=rf"unknown backbone '{re.escape(typo)}'.*Did you mean .*{re.escape(suggestion)}"
    ):
        create_backbone(typo)


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(BackboneError, match="unknown backbone 'qqqqqqqq'") as info:
        create_backbone("qqqqqqqq")
    assert "Did you mean" not in str(info.value)


def test_micro_vit_rejects_timm_kwargs():
    with pytest.raises(BackboneError, match=r"micro-ViT takes no extra timm arguments.*depth"):
        create_backbone(MICRO_VIT, depth=2)


@pytest.mark.parametrize(
    "name, kwargs",
    [("vit_base_patch16_gap_224", {"depth": 1}), ("eva02_tiny_patch14_224", {"depth": 1})],
)
def test_timm_model_without_cls_token_or_not_a_vit_is_rejected(name, kwargs):
    with pytest.raises(BackboneError, match=rf"{name} is not a timm VisionTransformer with a CLS token"):
        create_backbone(name, **kwargs)


def test_non_vit_timm_model_raises_backbone_error():
    with pytest.raises(BackboneError, match="resnet18"):
        create_backbone("resnet18")


def test_unknown_pretrained_tag_raises_backbone_error():
    with pytest.raises(BackboneError, match="augreg_in21kk"):
        create_backbone("vit_tiny_patch16_224.augreg_in21kk", **TINY_KW)


def test_pretrained_hub_weights_without_network_raise_backbone_error(monkeypatch):
    """pretrained=True on a hub name, network blocked (conftest) -> BackboneError that says what to do."""
    import time

    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # no retry back-off, ever
    start = time.monotonic()
    with pytest.raises(
        BackboneError,
        match=r"could not fetch pretrained weights for vit_tiny_patch16_224\.augreg_in21k "
        r".*weights_file=PATH.*'micro_vit'",
    ):
        create_backbone("vit_tiny_patch16_224.augreg_in21k", pretrained=True, **TINY_KW)
    assert time.monotonic() - start < 30


def test_micro_vit_pretrained_uses_the_offline_pretraining(monkeypatch, tiny_pretrain_config):
    """create_backbone(MICRO_VIT, pretrained=True): the train-or-load model, head removed, frozen."""
    from avpet_core.backbones import micro_vit as pretrain

    real = pretrain.pretrained_micro_vit
    calls = []

    def tiny(config=None, **kwargs):
        calls.append(kwargs)
        return real(tiny_pretrain_config, progress=False, **kwargs)

    monkeypatch.setattr(pretrain, "pretrained_micro_vit", tiny)
    model = create_backbone(MICRO_VIT, pretrained=True)
    assert len(calls) == 1
    assert model.num_classes == 0
    assert all(not p.requires_grad for p in model.parameters())
    reference = real(tiny_pretrain_config, progress=False)  # from the cache now
    for key, value in reference.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(2, 3, 48, 48, generator=_seeded())
    assert torch.equal(_features(model, x), _features(reference, x))


# --------------------------------------------------------------------------------------------
# freezing


@pytest.mark.parametrize("name, kwargs", [(MICRO_VIT, {}), (TINY_VIT, TINY_KW)])
def test_freeze_true_freezes_every_parameter_and_keeps_train_mode(name, kwargs):
    model = create_backbone(name, freeze=True, **kwargs)
    params = list(model.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert model.training  # frozen is not eval
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("name, kwargs", [(MICRO_VIT, {}), (TINY_VIT, TINY_KW)])
def test_freeze_false_leaves_every_parameter_trainable(name, kwargs):
    model = create_backbone(name, freeze=False, **kwargs)
    assert all(p.requires_grad for p in model.parameters())
    assert model.training


def test_freeze_module_keeps_eval_mode_and_returns_module():
    model = build_micro_vit().eval()
    assert freeze_module(model) is model
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())


def test_frozen_backbone_passes_gradients_to_its_input_but_not_its_weights():
    model = create_backbone(MICRO_VIT)
    x = torch.rand(1, 3, 48, 48, requires_grad=True)
    weights = torch.randn(96, generator=_seeded(13))  # a plain .sum() of LayerNorm output has zero gradient
    (model(x) * weights).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------
# dynamic input sizes


@pytest.mark.parametrize(
    "name, kwargs, sizes",
    [
        (MICRO_VIT, {}, [(48, 48), (128, 96), (96, 128), (16, 8)]),
        (TINY_VIT, TINY_KW, [(224, 224), (128, 208), (48, 48), (16, 32)]),
    ],
)
def test_dynamic_input_sizes_give_one_token_per_patch_plus_cls(name, kwargs, sizes):
    model = create_backbone(name, **kwargs)
    p = model.patch_embed.patch_size[0]
    for height, width in sizes:
        tokens = _features(model, torch.rand(2, 3, height, width))
        rows, cols = patch_grid(model, height, width)
        assert (rows, cols) == (height // p, width // p)
        assert tokens.shape == (2, 1 + (height // p) * (width // p), model.embed_dim), (height, width)
        assert tokens.shape[1] == 1 + rows * cols
        assert torch.isfinite(tokens).all()


def test_dynamic_size_uses_resampled_position_embeddings():
    """A 128x96 input is not just cropped 48x48 input: the position embedding is resampled."""
    model = create_backbone(MICRO_VIT)
    big = _features(model, torch.zeros(1, 3, 128, 96))
    small = _features(model, torch.zeros(1, 3, 48, 48))
    assert big.shape[1] == 1 + 16 * 12 and small.shape[1] == 1 + 6 * 6
    # With a constant input every patch token differs only by its position embedding, so a 16x12
    # grid of distinct tokens shows the embedding was resampled, not broadcast.
    patch_tokens = big[0, 1:]
    assert torch.unique(patch_tokens, dim=0).shape[0] == 16 * 12


def test_fixed_size_backbone_rejects_other_sizes():
    model = create_backbone(MICRO_VIT, dynamic_img_size=False)
    assert _features(model, torch.rand(1, 3, 48, 48)).shape[1] == 37
    with pytest.raises(AssertionError, match=r"Input height \(128\) doesn't match model \(48\)"):
        _features(model, torch.rand(1, 3, 128, 96))


def test_patch_grid_rejects_input_smaller_than_a_patch():
    model = create_backbone(MICRO_VIT)
    with pytest.raises(BackboneError, match=r"input 4x48 is smaller than one 8x8 patch"):
        patch_grid(model, 4, 48)


def test_input_that_is_not_a_multiple_of_the_patch_size_is_rejected_by_the_model():
    model = create_backbone(MICRO_VIT)
    with pytest.raises(AssertionError, match=r"Input height \(50\) should be divisible by patch size \(8\)"):
        _features(model, torch.rand(1, 3, 50, 48))


def test_patch_grid_rejects_sizes_the_model_rejects():
    model = create_backbone(MICRO_VIT)
    with pytest.raises(BackboneError, match=r"50x50.*8x8"):
        patch_grid(model, 50, 50)


# --------------------------------------------------------------------------------------------
# local weights files


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_micro_vit_weights_file_round_trip(tmp_path, suffix):
    torch.manual_seed(1)
    original = build_micro_vit().eval()
    path = tmp_path / f"micro{suffix}"
    _save(_state(original), path)

    loaded = create_backbone(MICRO_VIT, weights_file=path)
    x = torch.rand(3, 3, 128, 96, generator=_seeded(2))
    assert torch.equal(_features(loaded, x), _features(original, x))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in original.state_dict().items())
    assert all(not p.requires_grad for p in loaded.parameters())
    # the file, not the random initialisation, decided the output
    torch.manual_seed(3)
    assert not torch.equal(_features(create_backbone(MICRO_VIT), x), _features(original, x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_vit_weights_file_round_trip(tmp_path, suffix):
    """timm's pretrained_cfg_overlay(file=...) path, num_classes=0 model and file."""
    torch.manual_seed(4)
    original = create_backbone(TINY_VIT, **TINY_KW).eval()
    assert original.num_classes == 0
    state = _state(original)
    assert not any(k.startswith("head.") and v.numel() for k, v in state.items())
    path = tmp_path / f"tiny{suffix}"
    _save(state, path)

    loaded = create_backbone(TINY_VIT, weights_file=path, **TINY_KW)
    assert loaded.num_classes == 0
    assert loaded.pretrained_cfg.get("file") == str(path)
    x = torch.rand(2, 3, 128, 208, generator=_seeded(5))
    assert torch.equal(_features(loaded, x), _features(original, x))
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.manual_seed(6)
    assert not torch.equal(_features(create_backbone(TINY_VIT, **TINY_KW), x), _features(original, x))


def test_timm_weights_file_with_head_loads_into_headless_model(tmp_path):
    torch.manual_seed(7)
    with_head = create_backbone(TINY_VIT, num_classes=1000, **TINY_KW).eval()
    path = tmp_path / "with_head.safetensors"
    _save(_state(with_head), path)
    loaded = create_backbone(TINY_VIT, weights_file=path, **TINY_KW)
    x = torch.rand(1, 3, 224, 224, generator=_seeded(8))
    assert torch.equal(_features(loaded, x), _features(with_head, x))


def test_micro_vit_file_with_head_loads_with_or_without_head(tmp_path):
    torch.manual_seed(9)
    classifier = build_micro_vit(num_classes=16).eval()
    path = tmp_path / "classifier.safetensors"
    _save(_state(classifier), path)
    x = torch.rand(2, 3, 48, 48, generator=_seeded(10))

    headless = create_backbone(MICRO_VIT, weights_file=path)
    assert headless.num_classes == 0
    assert torch.equal(_features(headless, x), _features(classifier, x))

    with_head = create_backbone(MICRO_VIT, weights_file=path, num_classes=16).eval()
    with torch.no_grad():
        assert torch.equal(with_head(x), classifier(x))


def test_pth_with_state_dict_wrapper_is_read(tmp_path):
    model = build_micro_vit()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": _state(model)}, path)
    state = read_state_dict(path)
    assert set(state) == set(model.state_dict())


def test_pth_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(BackboneError, match=rf"{re.escape(str(path))}: expected a state dict of tensors, found Tensor"):
        read_state_dict(path)


@pytest.mark.parametrize("name, kwargs", [(MICRO_VIT, {}), (TINY_VIT, TINY_KW)])
def test_missing_weights_file(tmp_path, name, kwargs):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(BackboneError, match=rf"{re.escape(str(path))}: weights file not found"):
        create_backbone(name, weights_file=path, **kwargs)


def test_weights_path_that_is_a_directory(tmp_path):
    path = tmp_path / "dir.safetensors"
    path.mkdir()
    with pytest.raises(BackboneError, match=rf"{re.escape(str(path))}: weights file not found"):
        create_backbone(MICRO_VIT, weights_file=path)


@pytest.mark.parametrize("name, kwargs", [(MICRO_VIT, {}), (TINY_VIT, TINY_KW)])
def test_wrong_weights_suffix(tmp_path, name, kwargs):
    path = tmp_path / "weights.txt"
    path.write_text("not weights")
    with pytest.raises(BackboneError, match=rf"{re.escape(str(path))}: unsupported weights format '\.txt'"):
        create_backbone(name, weights_file=path, **kwargs)


# (name, suffix, seed of the random bytes, expected problem). The bytes are seeded: which exception
# torch.load raises on garbage depends on the bytes (UnpicklingError, IndexError, KeyError, ...).
CORRUPT_CASES = [
    pytest.param(MICRO_VIT, ".safetensors", 0, "not a readable weights file", id="micro-safetensors"),
    pytest.param(MICRO_VIT, ".pth", 0, "not a readable weights file", id="micro-pth-unpickling"),
    pytest.param(MICRO_VIT, ".pth", 2, "not a readable weights file", id="micro-pth-indexerror"),
    pytest.param(MICRO_VIT, ".npz", 0, "not a readable big_vision .npz checkpoint", id="micro-npz"),
    pytest.param(TINY_VIT, ".safetensors", 0, "not a readable weights file", id="timm-safetensors"),
    pytest.param(TINY_VIT, ".pth", 0, "not a readable weights file", id="timm-pth-unpickling"),
    pytest.param(TINY_VIT, ".pth", 20, "not a readable weights file", id="timm-pth-keyerror"),
    pytest.param(TINY_VIT, ".pth", 2, "not a readable weights file", id="timm-pth-indexerror"),
    pytest.param(TINY_VIT, ".npz", 0, "not a readable big_vision .npz checkpoint", id="timm-npz"),
]


@pytest.mark.parametrize("name, suffix, seed, problem", CORRUPT_CASES)
def test_corrupt_weights_file(tmp_path, name, suffix, seed, problem):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(random.Random(seed).randbytes(4096))
    kwargs = TINY_KW if name != MICRO_VIT else {}
    with pytest.raises(BackboneError, match=rf"{re.escape(str(path))}: {problem}"):
        create_backbone(name, weights_file=path, **kwargs)


def test_micro_vit_weights_that_do_not_fit(tmp_path):
    small = create_backbone(TINY_VIT, **TINY_KW)
    path = tmp_path / "tiny_vit.safetensors"
    _save(_state(small), path)
    with pytest.raises(
        BackboneError,
        match=rf"{re.escape(str(path))}: weights do not fit this model: "
        r"\d+ shape mismatches \(e\.g\. .*file \(\d+.*vs model",
    ):
        create_backbone(MICRO_VIT, weights_file=path)


def test_micro_vit_weights_with_missing_and_unexpected_keys(tmp_path):
    state = _state(build_micro_vit())
    state.pop("blocks.3.mlp.fc2.weight")
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "partial.safetensors"
    _save(state, path)
    with pytest.raises(
        BackboneError,
        match=r"1 missing keys \(e\.g\. blocks\.3\.mlp\.fc2\.weight\); 1 unexpected keys \(e\.g\. extra\.weight\)",
    ) as info:
        create_backbone(MICRO_VIT, weights_file=path)
    assert str(path) in str(info.value)


def test_headless_file_keeps_the_models_head(tmp_path):
    source = build_micro_vit()
    path = tmp_path / "headless.safetensors"
    _save(_state(source), path)
    target = build_micro_vit(num_classes=16)
    head_before = target.head.weight.detach().clone()
    load_weights(target, path)
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_timm_weights_that_do_not_fit(tmp_path):
    other = create_backbone("vit_small_patch16_224", **TINY_KW)  # embed dim 384, not 192
    path = tmp_path / "vit_small.safetensors"
    _save(_state(other), path)
    with pytest.raises(
        BackboneError,
        match=rf"{re.escape(str(path))}: weights do not fit this model: \d+ shape mismatches \(e\.g\. blocks\.0\.",
    ):
        create_backbone(TINY_VIT, weights_file=path, **TINY_KW)


def test_timm_weights_file_missing_blocks_is_rejected(tmp_path):
    shallow = create_backbone(TINY_VIT, depth=2)
    path = tmp_path / "depth2.safetensors"
    _save(_state(shallow), path)
    with pytest.raises(BackboneError, match=rf"{re.escape(str(path))}.*blocks\.2"):
        create_backbone(TINY_VIT, depth=3, weights_file=path)


def test_timm_empty_weights_file_is_rejected(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file({}, str(path))
    with pytest.raises(BackboneError, match=re.escape(str(path))):
        create_backbone(TINY_VIT, weights_file=path, **TINY_KW)


# --------------------------------------------------------------------------------------------
# normalisation


def test_normalise_images_micro_vit_uses_half_half():
    model = create_backbone(MICRO_VIT)
    images = torch.rand(4, 3, 48, 48, generator=_seeded(11))
    out = normalise_images(images, model)
    assert torch.allclose(out, (images - 0.5) / 0.5)
    assert out.min() >= -1 and out.max() <= 1


def test_normalise_images_uses_the_models_own_pretrained_cfg():
    model = create_backbone("deit_tiny_patch16_224", depth=1)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    images = torch.rand(2, 5, 3, 8, 8, generator=_seeded(12))  # extra leading dims
    out = normalise_images(images, model)
    assert out.shape == images.shape
    for c in range(3):
        assert torch.allclose(out[..., c, :, :], (images[..., c, :, :] - mean[c]) / std[c])


def test_normalise_images_follows_an_edited_pretrained_cfg():
    model = create_backbone(MICRO_VIT)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.1, 0.2, 0.3), "std": (1.0, 2.0, 4.0)}
    images = torch.ones(1, 3, 2, 2, dtype=torch.float64)
    out = normalise_images(images, model)
    assert out.dtype == torch.float64
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.9, 0.4, 0.175])
