"""Adapter-only checkpoints: exact round trips for every method x placement, clear refusals otherwise."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch

from avpet_core.adapters import AVPEAConfig, LSTTAConfig
from avpet_core.backbones import MICRO_VIT, create_backbone, create_text_encoder
from avpet_core.checkpoints import CheckpointError, checkpoint_paths, load_trained, read_checkpoint, save_trained
from avpet_core.models import DualStreamConfig, DualStreamViT, TrimodalConfig, TrimodalModel
from test_adapters import CONFIGS, TABLE, inputs, loss_of, make_model


def trained(method: str, placement: str, seed: int = 0) -> DualStreamViT:
    """A model whose adapters moved away from their initialisation (and whose BatchNorm statistics did)."""
    model = make_model(method, placement, seed=seed).train()
    optimiser = torch.optim.Adam(model.adapter_parameters(), lr=1e-2)
    frames, audio = inputs()
    for _ in range(3):
        optimiser.zero_grad()
        loss_of(model(frames, audio)).backward()
        optimiser.step()
    return model.eval()


@pytest.mark.parametrize("method,placement", TABLE)
def test_round_trip_is_exact(tmp_path, method, placement):
    model = trained(method, placement)
    head = torch.nn.Linear(96, 5)
    tensors_path, config_path = save_trained(
        tmp_path / "ckpt", model, head, head_config={"kind": "linear"}, metadata={"epoch": 3}
    )
    assert tensors_path.name == "ckpt.safetensors" and config_path.name == "ckpt.json"

    fresh = make_model(method, placement).eval()  # the same frozen backbone, adapters at their initialisation
    fresh_head = torch.nn.Linear(96, 5)
    frames, audio = inputs(seed=7)
    before = fresh(frames, audio).audio_tokens
    config = load_trained(tensors_path, fresh, fresh_head)
    assert config["metadata"] == {"epoch": 3} and config["head"] == {"kind": "linear"}

    expected, got = model(frames, audio), fresh(frames, audio)
    assert torch.equal(got.visual_tokens, expected.visual_tokens)
    assert torch.equal(got.audio_tokens, expected.audio_tokens)
    assert torch.equal(fresh_head.weight, head.weight) and torch.equal(fresh_head.bias, head.bias)
    if "audio" in model.config.adapted_streams:
        assert not torch.equal(before, got.audio_tokens)  # loading did something


def test_checkpoint_holds_only_adapters_and_head(tmp_path):
    model = trained("lavish_ave", "both")
    save_trained(tmp_path / "c", model)
    config, tensors = read_checkpoint(tmp_path / "c")
    assert all(key.startswith("adapters.") for key in tensors)
    assert any("running_mean" in key for key in tensors)  # BatchNorm statistics travel with the weights
    stored = sum(t.numel() for k, t in tensors.items() if "running" not in k and "num_batches" not in k)
    assert stored == sum(p.numel() for p in model.adapters.parameters())
    assert config["backbone"]["architecture"] == MICRO_VIT and config["streams"] == "both" and not config["has_head"]
    assert (tmp_path / "c.safetensors").stat().st_size < 200_000  # adapters only, not the 1.3 MB backbone


AVPEA_NAMES = ["g", "h", "bottleneck.down.weight", "bottleneck.down.bias", "bottleneck.up.weight", "bottleneck.up.bias"]
LSTTA_NAMES = [
    *(f"long_term.summaries.{m}.{p}" for m in ("visual", "audio", "text") for p in ("weight", "bias")),
    *(f"long_term.{layer}.{p}" for layer in ("query", "key", "value", "score") for p in ("weight", "bias")),
    "long_term.gates.audio",
    "long_term.gates.visual",
    *(
        f"short_term.{way}.{m}.{p}"
        for way in ("down", "up")
        for m in ("visual", "audio", "text")
        for p in ("weight", "bias")
    ),
    "short_term.gates.audio",
    "short_term.gates.text",
    "short_term.gates.visual",
]


@pytest.mark.parametrize(
    "kind,config",
    [("dual-stream", AVPEAConfig()), ("trimodal", AVPEAConfig()), ("trimodal", LSTTAConfig())],
    ids=["dual-avpea", "tri-avpea", "tri-lstta"],
)
def test_checkpoint_keys_keep_their_names(tmp_path, kind, config):
    """Tensor names are the file format: sublayer adapters under ``adapters.<stream>.<block>.<site>.``, stage
    adapters under ``adapters.<method>.<stage>.``, in the order the modules were built."""
    torch.manual_seed(0)
    vit = create_backbone(MICRO_VIT)
    if kind == "dual-stream":
        model = DualStreamViT(vit, DualStreamConfig(adapter=config))
    else:
        model = TrimodalModel(vit, create_text_encoder("micro_text", pretrained=False), TrimodalConfig(adapter=config))
    save_trained(tmp_path / "c", model)
    _, tensors = read_checkpoint(tmp_path / "c")
    if isinstance(config, LSTTAConfig):
        expected = [f"adapters.lstta.{stage}.{name}" for stage in range(4) for name in LSTTA_NAMES]
    else:
        expected = [
            f"adapters.{stream}.{block}.attn.{name}"
            for stream in ("visual", "audio")
            for block in range(4)
            for name in AVPEA_NAMES
        ]
    assert sorted(tensors) == sorted(expected)
    assert list(model.trained_module().state_dict()) == [key.removeprefix("adapters.") for key in expected]


@pytest.mark.parametrize(
    "saved,loaded,words",
    [
        (("avpea", "both"), ("lavish_ave", "both"), ["method=avpea", "method=lavish"]),
        (("avpea", "both"), ("avpea", "audio"), ["streams 'both'", "streams 'audio'"]),
        (("avpea", "both"), ("avpea_unscaled", "both"), ["scale_attention=True", "scale_attention=False"]),
        (("lavish_ave", "both"), ("lavish_avqa", "both"), ["num_latents=2", "num_latents=64"]),
    ],
)
def test_mismatched_adapters_are_refused_naming_both(tmp_path, saved, loaded, words):
    save_trained(tmp_path / "c", make_model(*saved))
    target = make_model(*loaded)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_trained(tmp_path / "c", target)
    message = str(info.value)
    assert str(tmp_path / "c.safetensors") in message and "does not fit this model" in message
    assert all(word in message for word in words), message
    assert "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing half-loaded


def test_mismatched_backbone_is_refused_naming_both(tmp_path):
    save_trained(tmp_path / "c", make_model("avpea", "both"))
    other = DualStreamViT(create_backbone("vit_tiny_patch16_224"), DualStreamConfig(adapter=CONFIGS["avpea"]))
    refusal = r"saved for backbone micro_vit \(D=96.*this model has backbone vit_tiny_patch16_224 \(D=192"
    with pytest.raises(CheckpointError, match=refusal):
        load_trained(tmp_path / "c", other)


def test_head_presence_must_match(tmp_path):
    model = make_model("houlsby", "both")
    save_trained(tmp_path / "no-head", model)
    with pytest.raises(CheckpointError, match="has no head weights, but a head was given"):
        load_trained(tmp_path / "no-head", make_model("houlsby", "both"), torch.nn.Linear(96, 5))
    save_trained(tmp_path / "head", model, torch.nn.Linear(96, 5))
    with pytest.raises(CheckpointError, match="has head weights, but no head was given"):
        load_trained(tmp_path / "head", make_model("houlsby", "both"))
    with pytest.raises(CheckpointError, match=r"head tensors do not fit \(wrong shape"):
        load_trained(tmp_path / "head", make_model("houlsby", "both"), torch.nn.Linear(96, 7))


def test_missing_corrupt_and_tampered_files(tmp_path):
    model = make_model("avpea", "visual")
    with pytest.raises(CheckpointError, match=r"nothing\.json: checkpoint file not found"):
        load_trained(tmp_path / "nothing", model)

    tensors_path, config_path = save_trained(tmp_path / "c", model)
    tensors_path.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"c\.safetensors: cannot read the checkpoint tensors"):
        load_trained(tmp_path / "c", model)

    save_trained(tmp_path / "c", model)
    config_path.write_text('{"backbone": {},\n "adapter": oops}')
    with pytest.raises(CheckpointError, match=r"c\.json line 2: not a valid checkpoint config"):
        load_trained(tmp_path / "c", model)
    config_path.write_text(json.dumps({"backbone": {}}))
    with pytest.raises(CheckpointError, match=r"lacks \['format', 'has_head'\]"):
        load_trained(tmp_path / "c", model)

    save_trained(tmp_path / "c", model)
    state = safetensors.torch.load_file(tensors_path)
    state.pop(next(iter(state)))
    safetensors.torch.save_file(state, tensors_path)
    with pytest.raises(CheckpointError, match=r"adapters tensors do not fit \(missing"):
        load_trained(tmp_path / "c", model)


def test_unwritable_directory_and_bad_metadata(tmp_path):
    model = make_model("avpea", "both")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="cannot write the checkpoint"):
        save_trained(blocker / "c", model)
    with pytest.raises(CheckpointError, match="metadata is not JSON-serialisable"):
        save_trained(tmp_path / "c", model, metadata={"tensor": torch.zeros(1)})
    assert not (tmp_path / "c.safetensors").exists() and not (tmp_path / "c.json").exists()


def test_save_is_atomic(tmp_path, monkeypatch):
    """An interrupted save leaves the previous checkpoint whole and no temporary files behind."""
    model = trained("avpea", "both")
    tensors_path, config_path = save_trained(tmp_path / "c", model)
    good = tensors_path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_trained(tmp_path / "c", make_model("avpea", "both", seed=5))
    assert tensors_path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]


def test_checkpoint_paths():
    assert checkpoint_paths("runs/x") == checkpoint_paths("runs/x.safetensors") == checkpoint_paths("runs/x.json")
    assert [p.name for p in checkpoint_paths("runs/x.v1")] == ["x.v1.safetensors", "x.v1.json"]
