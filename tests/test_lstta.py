"""LSTTA (avpet_core.adapters.lstta) in the trimodal model (avpet_core.models.trimodal): the invariants
every adapter of the book keeps, for every LSTTA variant, plus what each of its two modules promises."""

from __future__ import annotations

import pytest
import torch

from avpet_core.adapters import (
    STAGE_ADAPTERS,
    SUBLAYER_ADAPTERS,
    AdapterConfigError,
    AVPEAConfig,
    LSTTAConfig,
    StageAdapter,
    StageAdapterConfig,
    StageOutput,
    SublayerAdapterConfig,
)
from avpet_core.adapters.lstta import LSTTAOutput
from avpet_core.backbones import MICRO_VIT, create_backbone
from avpet_core.backbones import create_text_encoder
from avpet_core.checkpoints import CheckpointError, load_trained, save_trained
from avpet_core.models import DualStreamError, TrimodalConfig, TrimodalError, TrimodalModel, build_dual_stream
from avpet_core.models.trimodal import stage_ends

VARIANTS = {
    "lsf": LSTTAConfig(short_term=False),
    "ssi": LSTTAConfig(long_term=False),
    "both": LSTTAConfig(),
    "both-w1": LSTTAConfig(window=1),
    "both-w3": LSTTAConfig(window=3),
}
QUESTIONS = ["is the drum in the video playing", "which instrument starts playing before the bell"]


def inputs(seed: int = 0, segments: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, segments, 3, 48, 48, generator=g), torch.randn(2, segments, 3, 64, 48, generator=g)


def model_with(config, seed: int = 0, **options) -> TrimodalModel:
    torch.manual_seed(seed)
    vit = create_backbone(MICRO_VIT, pretrained=False)
    text = create_text_encoder("micro_text", pretrained=False)
    return TrimodalModel(vit, text, TrimodalConfig(adapter=config, **options)).eval()


def open_gates(model: TrimodalModel, value: float = 1.0) -> None:
    with torch.no_grad():
        for block in model.adapters["lstta"]:
            for gate in block.gates().values():
                gate.fill_(value)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_zero_gates_are_the_frozen_encoders_bit_for_bit(name):
    frames, audio = inputs()
    frozen = model_with(None)(frames, audio, QUESTIONS)
    adapted = model_with(VARIANTS[name])(frames, audio, QUESTIONS)
    for key in ("visual_tokens", "audio_tokens", "text_tokens"):
        assert torch.equal(getattr(frozen, key), getattr(adapted, key)), key


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_only_adapter_parameters_train_and_the_count_is_the_closed_form(name):
    model = model_with(VARIANTS[name])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("adapters.lstta.") for n in trainable)
    per_block = VARIANTS[name].num_parameters(model.dims)
    assert sum(p.numel() for p in model.trained_module().parameters()) == per_block * model.num_stages
    assert sum(p.numel() for p in model.adapters["lstta"][0].parameters()) == per_block


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_save_and_load_round_trip_is_exact(name, tmp_path):
    model = model_with(VARIANTS[name])
    with torch.no_grad():
        for p in model.trained_module().parameters():
            p.normal_()
    save_trained(tmp_path / "lstta", model)
    fresh = model_with(VARIANTS[name])  # the same frozen encoders, its own adapters
    with torch.no_grad():
        for p in fresh.trained_module().parameters():
            p.uniform_()
    load_trained(tmp_path / "lstta", fresh)
    for a, b in zip(model.trained_module().state_dict().values(), fresh.trained_module().state_dict().values()):
        assert torch.equal(a, b)
    frames, audio = inputs()
    assert torch.equal(model(frames, audio, QUESTIONS).visual_tokens, fresh(frames, audio, QUESTIONS).visual_tokens)
    other = "ssi" if name != "ssi" else "lsf"
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_trained(tmp_path / "lstta", model_with(VARIANTS[other]))


@pytest.mark.parametrize("name", ["both", "lsf", "ssi"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    frames, audio = inputs()
    grads = []
    for recompute in (False, True):
        model = model_with(VARIANTS[name], gradient_checkpointing=recompute).train()
        open_gates(model, 0.5)
        out = model(frames, audio, QUESTIONS)
        (out.visual_tokens.square().mean() + out.audio_tokens.mean() + out.text_tokens.square().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.trained_module().named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-5, atol=1e-6)


def test_long_term_scores_lie_in_their_range_and_change_with_the_question():
    model = model_with(VARIANTS["lsf"])
    open_gates(model)
    frames, audio = inputs()
    out = model(frames, audio, QUESTIONS)
    assert len(out.importance) == model.num_stages
    for alpha in out.importance:
        assert alpha.shape == (2, 5) and ((alpha > 0) & (alpha < 1)).all()
    other = model(frames, audio, ["how many instruments can be heard", "is the violin louder than the flute"])
    assert not torch.allclose(out.importance[0], other.importance[0])
    # a frame's importance reads the whole video: changing one segment moves every segment's score
    changed = audio.clone()
    changed[:, 4] = torch.randn_like(changed[:, 4])
    moved = (model(frames, changed, QUESTIONS).importance[0] - out.importance[0]).abs()
    assert (moved[:, :4] > 0).all()


@pytest.mark.parametrize("window", [1, 2])
def test_short_term_interaction_stays_within_its_window(window):
    """SSI alone, one stage: perturbing segment 3's audio moves the visual tokens of segment 3's window only."""
    model = model_with(LSTTAConfig(long_term=False, window=window), stages=1)
    open_gates(model)
    frames, audio = inputs()
    changed = audio.clone()
    changed[:, 3] = torch.randn_like(changed[:, 3])
    before, after = model(frames, audio, QUESTIONS), model(frames, changed, QUESTIONS)
    moved = (after.visual_tokens - before.visual_tokens).abs().amax(dim=(-1, -2))  # (B, T)
    inside = {3} if window == 1 else {2, 3}
    for t in range(5):
        assert bool((moved[:, t] > 0).all()) == (t in inside), (t, moved)


def test_stage_alignment_of_encoders_of_different_depths():
    assert stage_ends(4, 4) == [1, 2, 3, 4]
    assert stage_ends(12, 6) == [2, 4, 6, 8, 10, 12]
    assert stage_ends(12, 4) == [3, 6, 9, 12]
    with pytest.raises(TrimodalError, match="do not fit"):
        stage_ends(2, 4)
    model = model_with(LSTTAConfig(), stages=2)
    assert model.num_stages == 2 and len(model.adapters["lstta"]) == 2


def test_lstta_is_the_stage_adapter_of_the_registry():
    assert STAGE_ADAPTERS["lstta"] is LSTTAConfig and "lstta" not in SUBLAYER_ADAPTERS
    assert isinstance(LSTTAConfig(), StageAdapterConfig) and not isinstance(LSTTAConfig(), SublayerAdapterConfig)
    assert LSTTAOutput is StageOutput
    model = model_with(LSTTAConfig(), stages=2)
    assert model.config.has_stage_adapter and list(model.adapters) == ["lstta"]
    assert all(isinstance(block, StageAdapter) for block in model.adapters["lstta"])
    assert model.adapter("lstta", 0, "attn") is None and model.adapter("visual", 0, "attn") is None
    model.train()
    assert model.adapters.training and not (model.visual.training or model.audio.training or model.text.training)
    assert not model_with(AVPEAConfig()).config.has_stage_adapter


def test_sublayer_adapters_in_the_trimodal_model_leave_the_language_encoder_as_it_was():
    frames, audio = inputs()
    frozen = model_with(None)(frames, audio, QUESTIONS)
    model = model_with(AVPEAConfig())
    with torch.no_grad():
        for stream in ("visual", "audio"):
            for blk in model.adapters[stream]:
                blk["attn"].g.fill_(1.0)
                blk["attn"].h.fill_(1.0)
    out = model(frames, audio, QUESTIONS)
    assert torch.equal(out.text_tokens, frozen.text_tokens)
    assert not torch.allclose(out.visual_tokens, frozen.visual_tokens)


def test_clear_errors():
    with pytest.raises(AdapterConfigError, match="needs long-term filtering, short-term interaction or both"):
        LSTTAConfig(long_term=False, short_term=False)
    with pytest.raises(AdapterConfigError, match="at least one segment"):
        LSTTAConfig(window=0)
    with pytest.raises(DualStreamError, match="build_trimodal"):
        build_dual_stream(MICRO_VIT, "lstta")
    model = model_with(LSTTAConfig())
    frames, audio = inputs()
    with pytest.raises(TrimodalError, match="1 questions for 2 videos"):
        model(frames, audio, QUESTIONS[:1])
    with pytest.raises(TrimodalError, match="same B and T"):
        model(frames, audio[:, :3], QUESTIONS)
