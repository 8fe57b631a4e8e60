"""Adapters on the frozen encoders: invariants checked for every method x placement (PEFT style).

The table: every adapter method (Houlsby bottleneck, AV-PEA, LAVISH with both presets) crossed
with every placement of AV-PEA's Table 4 (adapters in the audio stream, the visual stream, both).
The registry contract: every entry of each adapter registry (sublayer: ``SUBLAYER_ADAPTERS``; stage:
``STAGE_ADAPTERS``), in every model that takes its role, leaves the frozen model's output unchanged
as built, trains nothing but its own weights, and has the closed form of :mod:`avpet_core.params`.
"""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from avpet_core.adapters import (
    ADAPTER_CONFIGS,
    LAVISH_AVE,
    LAVISH_AVQA,
    METHODS,
    STAGE_ADAPTERS,
    SUBLAYER_ADAPTERS,
    AdapterConfigError,
    AVPEAAdapter,
    AVPEAConfig,
    BottleneckConfig,
    LavishConfig,
    StageAdapter,
    StageAdapterConfig,
    StageOutput,
    SublayerAdapter,
    SublayerAdapterConfig,
    adapter_config,
    cls_cross_attention,
    config_from_dict,
)
from avpet_core.backbones import MICRO_VIT, create_backbone, create_text_encoder, normalise_images
from avpet_core.models import (
    STREAMS,
    DualStreamConfig,
    DualStreamError,
    DualStreamViT,
    TrimodalConfig,
    TrimodalModel,
    build_dual_stream,
)
from avpet_core.params import (
    closed_form_adapter_parameters,
    closed_form_trimodal_parameters,
    count_trained,
    count_without_weights,
)

CONFIGS = {
    "houlsby": BottleneckConfig(),
    "avpea": AVPEAConfig(),
    "avpea_unscaled": AVPEAConfig(scale_attention=False),
    "lavish_ave": LAVISH_AVE,
    "lavish_avqa": LAVISH_AVQA,
}
PLACEMENTS = ("audio", "visual", "both")
TABLE = [(method, placement) for method in CONFIGS for placement in PLACEMENTS]
OTHER = {"audio": "visual", "visual": "audio"}


def make_model(method: str, placement: str, seed: int = 0, **kwargs) -> DualStreamViT:
    torch.manual_seed(seed)
    backbone = create_backbone(MICRO_VIT)  # random weights: the invariants do not need pretraining
    return DualStreamViT(backbone, DualStreamConfig(adapter=CONFIGS[method], streams=placement, **kwargs))


def inputs(seed: int = 1, batch: int = 2, segments: int = 2):
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, segments, 3, 48, 48, generator=gen)
    audio = torch.randn(batch, segments, 3, 32, 40, generator=gen)  # 4 x 5 = 20 audio patches
    return frames, audio


def frozen_reference(model: DualStreamViT, frames, audio):
    """Each stream through timm's own forward_features, one at a time."""
    vit = model.backbone
    visual = vit.forward_features(normalise_images(frames, vit).flatten(0, 1))
    sound = vit.forward_features(audio.flatten(0, 1))
    return visual.unflatten(0, frames.shape[:2]), sound.unflatten(0, audio.shape[:2])


def loss_of(output) -> torch.Tensor:
    return output.visual_tokens.square().mean() + output.audio_tokens.square().mean() + output.audio_cls.sum() * 0.1


def set_gates(model: DualStreamViT, value: float) -> None:
    with torch.no_grad():
        for adapter in model.adapters.modules():
            if hasattr(adapter, "gates") and adapter is not model.adapters:
                for gate in adapter.gates().values():
                    gate.fill_(value)


# --------------------------------------------------------------------------------------------
# zero-initialised gates: the adapted model *is* the frozen backbone


@pytest.mark.parametrize("method,placement", TABLE)
def test_zero_initialised_adapters_leave_the_backbone_unchanged(method, placement):
    model = make_model(method, placement)
    frames, audio = inputs()
    out = model(frames, audio)
    visual_ref, audio_ref = frozen_reference(model, frames, audio)
    assert torch.equal(out.visual_tokens, visual_ref)
    assert torch.equal(out.audio_tokens, audio_ref)
    gates = [
        g for stream in model.adapters.values() for block in stream for a in block.values() for g in a.gates().values()
    ]
    assert gates and all(g.item() == 0.0 for g in gates)

    set_gates(model, 0.5)  # the check is not vacuous: open gates change the adapted streams
    opened = model(frames, audio)
    for stream in model.config.adapted_streams:
        ref = visual_ref if stream == "visual" else audio_ref
        assert not torch.allclose(getattr(opened, f"{stream}_tokens"), ref)


def test_no_adapter_is_the_backbone():
    model = DualStreamViT(create_backbone(MICRO_VIT), DualStreamConfig(adapter=None, streams="both"))
    frames, audio = inputs()
    out = model(frames, audio)
    assert len(model.adapters) == 0 and model.config.adapted_streams == ()
    reference = frozen_reference(model, frames, audio)
    assert all(torch.equal(a, b) for a, b in zip((out.visual_tokens, out.audio_tokens), reference))


# --------------------------------------------------------------------------------------------
# only adapters train, only in the streams the placement names


@pytest.mark.parametrize("method,placement", TABLE)
def test_only_adapter_weights_train(method, placement):
    model = make_model(method, placement).train()
    assert not model.backbone.training, "the frozen backbone stays in eval mode"
    streams = set(placement.replace("both", "visual audio").split())
    assert set(model.adapters) == set(model.config.adapted_streams) == streams

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"adapters.{name}" for name, _ in model.adapters.named_parameters()}
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}

    frames, audio = inputs()
    visual_ref, audio_ref = frozen_reference(model, frames, audio)
    optimiser = torch.optim.Adam(model.adapter_parameters(), lr=1e-2)
    for _ in range(3):  # the gates open at step 1; gates behind them get gradients from step 2 or 3
        optimiser.zero_grad()
        loss_of(model(frames, audio)).backward()
        optimiser.step()
    optimiser.zero_grad()
    loss_of(model(frames, audio)).backward()

    for name, p in model.backbone.named_parameters():
        assert p.grad is None, f"frozen {name} received a gradient"
    for name, p in model.adapters.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"adapter weight {name} received no gradient"
    after = model.backbone.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before), "backbone weights changed"

    model.eval()
    trained = model(frames, audio)
    for stream, ref in (("visual", visual_ref), ("audio", audio_ref)):
        tokens = getattr(trained, f"{stream}_tokens")
        if stream in model.config.adapted_streams:
            assert not torch.allclose(tokens, ref), f"training did not change the {stream} stream"
        else:  # a stream without adapters reads nothing from the other: it is still the frozen ViT
            assert torch.equal(tokens, ref), f"the {stream} stream has no adapters but changed"


# --------------------------------------------------------------------------------------------
# equivalences of execution paths


@pytest.mark.parametrize("method", CONFIGS)
def test_gradient_checkpointing_gives_the_same_gradients(method):
    grads = []
    for checkpointing in (False, True):
        model = make_model(method, "both", gradient_checkpointing=checkpointing).train()
        set_gates(model, 0.3)
        frames, audio = inputs()
        out = model(frames, audio)
        loss_of(out).backward()
        grads.append({name: p.grad.clone() for name, p in model.adapters.named_parameters()})
        grads[-1]["__outputs__"] = out.audio_tokens.detach()
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("method", CONFIGS)
def test_fused_and_unfused_attention_agree(method):
    model = make_model(method, "both").eval()
    set_gates(model, 0.3)
    frames, audio = inputs()
    model.set_fused_attention(True)
    fused = model(frames, audio)
    model.set_fused_attention(False)
    unfused = model(frames, audio)
    assert not model.backbone.blocks[0].attn.fused_attn
    torch.testing.assert_close(unfused.visual_tokens, fused.visual_tokens, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(unfused.audio_tokens, fused.audio_tokens, rtol=1e-4, atol=1e-5)


def test_outputs_keep_the_segment_layout_and_cls():
    model = make_model("avpea", "both")
    frames, audio = inputs(batch=3, segments=4)
    out = model(frames, audio, keep_block_inputs=True)
    assert out.visual_tokens.shape == (3, 4, 1 + 36, 96)
    assert out.audio_tokens.shape == (3, 4, 1 + 20, 96)
    assert out.visual_cls.shape == out.audio_cls.shape == (3, 4, 96)
    assert torch.equal(out.visual_cls, out.visual_tokens[:, :, 0])
    assert len(out.block_inputs) == model.depth and out.block_inputs[0][1].shape == (12, 21, 96)
    one_video = model(frames[0], audio[0])  # segments as the batch: (segments, 3, H, W)
    assert one_video.visual_tokens.shape == (4, 37, 96)
    torch.testing.assert_close(one_video.visual_tokens, out.visual_tokens[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# AV-PEA against its equations


def test_avpea_adapter_follows_equations_5_to_8():
    torch.manual_seed(0)
    dim, n, m = 16, 5, 7
    adapter = AVPEAAdapter(dim, AVPEAConfig(reduction=4))
    with torch.no_grad():
        adapter.g.fill_(0.7)
        adapter.h.fill_(-1.3)
    x, other = torch.randn(2, 1 + n, dim), torch.randn(2, 1 + m, dim)

    w1, b1 = adapter.bottleneck.down.weight, adapter.bottleneck.down.bias
    w2, b2 = adapter.bottleneck.up.weight, adapter.bottleneck.up.bias
    expected = torch.empty_like(x)
    for b in range(2):
        logits = torch.stack([x[b, 0] @ other[b, j] for j in range(1 + m)]) / math.sqrt(dim)
        ca = 0.7 * (torch.softmax(logits, 0) @ other[b])  # eq. 7
        rows = torch.cat([ca[None], x[b, 1:]])  # [CA ; X_p]
        expected[b] = -1.3 * (torch.relu(rows @ w1.T + b1) @ w2.T + b2)  # eq. 5, f = Linear-ReLU-Linear
    torch.testing.assert_close(adapter(x, {"audio": other}), expected, rtol=1e-5, atol=1e-6)

    assert adapter.bottleneck.down.out_features == dim // 4  # D = reduction * d
    assert AVPEAAdapter(768).bottleneck.down.out_features == 96
    assert AVPEAAdapter(1024).bottleneck.down.out_features == 128


def test_avpea_unscaled_option_is_the_literal_softmax():
    x, other = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    literal = AVPEAAdapter(8, AVPEAConfig(scale_attention=False))
    _, weights = literal.cross_attention(x, other)
    torch.testing.assert_close(weights[0, 0], torch.softmax(other[0] @ x[0, 0], 0))


def test_avpea_exchange_reaches_only_the_cls_row_within_a_block():
    """Eq. 5: the other stream enters through CA, which replaces the CLS row only."""
    adapter = AVPEAAdapter(16, AVPEAConfig(reduction=4))
    with torch.no_grad():
        adapter.g.fill_(1.0)
        adapter.h.fill_(1.0)
    x = torch.randn(2, 6, 16)
    a, b = adapter(x, {"audio": torch.randn(2, 9, 16)}), adapter(x, {"audio": torch.randn(2, 9, 16)})
    assert not torch.allclose(a[:, 0], b[:, 0])
    assert torch.equal(a[:, 1:], b[:, 1:])


@pytest.mark.parametrize("method", ["lavish_ave", "houlsby"])
def test_other_methods_exchange(method):
    """LAVISH lets the other stream reach every token; Houlsby lets it reach none."""
    torch.manual_seed(0)
    adapter = CONFIGS[method].build(16) if method == "houlsby" else LavishConfig(reduction=4).build(16)
    for gate in adapter.gates().values():
        torch.nn.init.constant_(gate, 1.0)
    adapter.eval()
    x = torch.randn(2, 6, 16)
    a, b = adapter(x, {"audio": torch.randn(2, 9, 16)}), adapter(x, {"audio": torch.randn(2, 9, 16)})
    if method == "houlsby":
        assert torch.equal(a, b)
    else:
        assert (a - b).abs().amax(dim=-1).min() > 0  # every row changed


@pytest.mark.parametrize("m", [4, 16, 64, 256])
def test_avpea_cross_attention_is_linear_in_the_other_streams_tokens(m):
    """Doubling the other stream's tokens doubles the attention matrix (one row), not squares it."""
    cls = torch.randn(3, 1, 32)
    _, weights = cls_cross_attention(cls, torch.randn(3, m, 32))
    _, doubled = cls_cross_attention(cls, torch.randn(3, 2 * m, 32))
    assert weights.shape == (3, 1, m) and doubled.shape == (3, 1, 2 * m)
    assert doubled.numel() == 2 * weights.numel()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 1))


def test_avpea_cross_attention_inside_the_model_sees_every_token_of_the_other_stream():
    model = make_model("avpea", "both")
    frames, audio = inputs()
    out = model(frames, audio, keep_block_inputs=True)
    visual, sound = out.block_inputs[0]
    _, audio_cls_over_image = model.adapter("audio", 0, "attn").cross_attention(sound, visual)
    _, visual_cls_over_audio = model.adapter("visual", 0, "attn").cross_attention(visual, sound)
    assert audio_cls_over_image.shape == (4, 1, 37) and visual_cls_over_audio.shape == (4, 1, 21)


# --------------------------------------------------------------------------------------------
# parameter counts: modules == closed form == the reference notes' arithmetic


def avpea_formula(dim, depth, streams, d):  # notes §1: streams x L x (2 D d + d + D), plus gates g, h
    return streams * depth * (2 * dim * d + d + dim + 2)


def lavish_formula(dim, depth, streams, r, g, t, bn, ln):  # notes §2, four adapters per block
    per = t * dim + 2 * dim * (dim // r) // g + (2 * (dim // r) + 2 * dim if bn else 0) + (4 * dim if ln else 0) + 2
    return streams * 2 * depth * per


BACKBONES = {  # name: (D, depth)
    MICRO_VIT: (96, 4),
    "vit_base_patch16_224.augreg_in21k": (768, 12),
    "vit_large_patch16_224.augreg_in21k": (1024, 24),
}


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("method", CONFIGS)
def test_counts_match_the_closed_form(backbone, placement, method):
    dim, depth = BACKBONES[backbone]
    config = CONFIGS[method]
    counts = count_without_weights(backbone, config, placement)
    streams = 2 if placement == "both" else 1
    if method == "houlsby":
        expected = streams * depth * (2 * dim * (dim // 8) + dim // 8 + dim + 1)
    elif method.startswith("avpea"):
        expected = avpea_formula(dim, depth, streams, dim // 8)
    else:
        expected = lavish_formula(
            dim,
            depth,
            streams,
            config.reduction,
            config.groups,
            config.num_latents,
            config.batch_norm,
            config.layer_norm,
        )
    assert counts.model_trained == expected == closed_form_adapter_parameters(config, dim, depth, placement)
    assert counts.trainable == counts.model_trained
    with torch.device("meta"):
        assert counts.frozen == sum(p.numel() for p in create_backbone(backbone).parameters())


@pytest.mark.parametrize(
    "backbone,method,expected",
    [
        ("vit_base_patch16_224.augreg_in21k", "avpea", 3_559_728),  # notes: 3.560M (paper 3.7M)
        ("vit_large_patch16_224.augreg_in21k", "avpea", 12_638_304),  # notes: 12.638M (paper 12.9M)
        ("vit_base_patch16_224.augreg_in21k", "lavish_ave", 3_843_168),  # notes: 3.843M (paper 3.9M)
        ("vit_large_patch16_224.augreg_in21k", "lavish_ave", 13_394_112),  # notes: 13.394M (paper 13.4M)
    ],
)
def test_paper_backbone_counts(backbone, method, expected):
    counts = count_without_weights(backbone, CONFIGS[method], "both")
    assert counts.model_trained == expected
    assert counts.frozen == {"vit_base_": 85_798_656, "vit_large": 303_301_632}[backbone[:9]]


def test_count_trained_counts_a_real_model_and_its_head():
    model = make_model("avpea", "both")
    head = torch.nn.Linear(2 * 96, 11)
    counts = count_trained(model, head)
    assert counts.model_trained == avpea_formula(96, 4, 2, 12)
    assert counts.trainable == counts.model_trained + 2 * 96 * 11 + 11
    assert counts.frozen == sum(p.numel() for p in model.backbone.parameters())
    assert counts.model_trained_share == pytest.approx(counts.model_trained / counts.total)


# --------------------------------------------------------------------------------------------
# the registries: one contract per role, for every registered method and every model of that role

ROLES = {  # role: (registry, config base, module base, the models that take it)
    "sublayer": (SUBLAYER_ADAPTERS, SublayerAdapterConfig, SublayerAdapter, ("dual-stream", "trimodal")),
    "stage": (STAGE_ADAPTERS, StageAdapterConfig, StageAdapter, ("trimodal",)),
}
CONTRACT = [
    (role, method, kind) for role, (registry, *_, kinds) in ROLES.items() for method in registry for kind in kinds
]
QUESTIONS = ["is the drum playing", "which instrument starts first"]


def contract_model(kind: str, config) -> DualStreamViT | TrimodalModel:
    """The ``kind`` model over micro encoders seeded alike, so that ``config=None`` is the same frozen model."""
    torch.manual_seed(0)
    vit = create_backbone(MICRO_VIT)
    if kind == "dual-stream":
        return DualStreamViT(vit, DualStreamConfig(adapter=config, streams="both"))
    return TrimodalModel(vit, create_text_encoder("micro_text", pretrained=False), TrimodalConfig(adapter=config))


def contract_outputs(model) -> dict[str, torch.Tensor]:
    frames, audio = inputs()
    if isinstance(model, DualStreamViT):
        out = model(frames, audio)
        return {"visual": out.visual_tokens, "audio": out.audio_tokens}
    out = model(frames, audio, QUESTIONS)
    return {"visual": out.visual_tokens, "audio": out.audio_tokens, "text": out.text_tokens}


def role_modules(model) -> list:
    """The adapter modules of ``model`` (of either role), not their submodules."""
    return [m for m in model.adapters.modules() if isinstance(m, (SublayerAdapter, StageAdapter))]


def test_the_registries_split_the_methods_by_role():
    assert set(SUBLAYER_ADAPTERS).isdisjoint(STAGE_ADAPTERS)
    assert ADAPTER_CONFIGS == {**SUBLAYER_ADAPTERS, **STAGE_ADAPTERS}  # the one lookup of method names
    assert METHODS == ("none", "houlsby", "avpea", "lavish", "lstta")
    for role, (registry, config_base, _, _) in ROLES.items():
        other_base = StageAdapterConfig if config_base is SublayerAdapterConfig else SublayerAdapterConfig
        for method, cls in registry.items():
            assert cls.method == method and issubclass(cls, config_base) and not issubclass(cls, other_base), role
    assert {config.method for config in CONFIGS.values()} == set(SUBLAYER_ADAPTERS)  # the table above covers them


@pytest.mark.parametrize("role,method,kind", CONTRACT)
def test_every_registered_method_keeps_the_adapter_contract(role, method, kind):
    registry, config_base, module_base, _ = ROLES[role]
    config = adapter_config(method)
    assert type(config) is registry[method] and isinstance(config, config_base)
    model = contract_model(kind, config)
    modules = role_modules(model)
    assert modules and all(isinstance(m, module_base) for m in modules)
    if role == "stage":  # a stage adapter is no sublayer adapter of any stream
        assert model.config.has_stage_adapter and model.adapter(method, 0, "attn") is None

    # as built: every gate is zero and the model is the frozen one, bit for bit
    gates = [g for m in modules for g in m.gates().values()]
    assert gates and all(g.item() == 0.0 for g in gates)
    frozen, adapted = contract_outputs(contract_model(kind, None).eval()), contract_outputs(model.eval())
    assert frozen.keys() == adapted.keys() and all(torch.equal(frozen[k], adapted[k]) for k in frozen)

    # only the adapters train, the frozen encoders stay in eval mode and get no gradient
    assert model.trained_module() is model.adapters and model.checkpoint_prefix == "adapters"
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"adapters.{name}" for name, _ in model.adapters.named_parameters()}
    model.train()
    assert all(m.training for m in model.adapters.modules())
    assert all(not m.training for encoder in model.frozen_encoders() for m in encoder.modules())
    with torch.no_grad():
        for gate in gates:
            gate.fill_(0.5)
    opened = contract_outputs(model)
    assert any(not torch.allclose(opened[k], frozen[k]) for k in opened)  # the check above is not vacuous
    sum(t.square().mean() for t in opened.values()).backward()
    for encoder in model.frozen_encoders():
        assert all(p.grad is None for p in encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapters.parameters())

    # the count: modules == the closed forms of avpet_core.params, per module and for the model
    shape = model.embed_dim if kind == "dual-stream" else (model.dims if role == "stage" else model.dims["visual"])
    assert all(sum(p.numel() for p in m.parameters()) == config.num_parameters(shape) for m in modules)
    if kind == "dual-stream":
        closed = closed_form_adapter_parameters(config, model.embed_dim, model.depth, "both")
    else:
        closed = closed_form_trimodal_parameters(config, model.dims, model.num_stages, len(model.visual.blocks))
    counts = count_trained(model)
    assert counts.model_trained == counts.trainable == closed == sum(p.numel() for p in model.adapter_parameters())


@pytest.mark.parametrize("method", STAGE_ADAPTERS)
def test_the_dual_stream_model_refuses_every_stage_adapter(method):
    with pytest.raises(DualStreamError, match="build_trimodal"):
        DualStreamConfig(adapter=adapter_config(method))


@pytest.mark.parametrize("kind", ["dual-stream", "trimodal"])
def test_sublayer_adapters_read_the_other_vit_stream_only(kind):
    """What :mod:`avpet_core.adapters.base` promises: both models pass one other modality, the other ViT
    stream, and the trimodal model's language encoder reaches no sublayer adapter."""
    model = contract_model(kind, AVPEAConfig()).eval()
    seen: dict[str, set] = {}
    for stream in STREAMS:
        for block in model.adapters[stream]:
            for adapter in block.values():
                adapter.register_forward_pre_hook(
                    lambda _, args, s=stream: seen.setdefault(s, set()).add(tuple(args[1]))
                )
    with torch.no_grad():
        contract_outputs(model)
    assert seen == {"visual": {("audio",)}, "audio": {("visual",)}}


def test_a_stage_adapter_returns_a_delta_per_modality():
    config = next(iter(STAGE_ADAPTERS.values()))()
    dims = {"visual": 16, "audio": 24, "text": 8}
    block = config.build(dims)
    tokens = {"visual": torch.randn(2, 3, 5, 16), "audio": torch.randn(2, 3, 4, 24), "text": torch.randn(2, 6, 8)}
    out = block(tokens, torch.ones(2, 6, dtype=torch.bool))
    assert isinstance(block, StageAdapter) and isinstance(out, StageOutput)
    assert {m: d.shape for m, d in out.deltas.items()} == {m: t.shape for m, t in tokens.items()}
    assert all(torch.equal(d, torch.zeros_like(d)) for d in out.deltas.values())  # zero gates: zero deltas


# --------------------------------------------------------------------------------------------
# configs and bad input


def test_config_round_trip_and_registry():
    for config in CONFIGS.values():
        assert config_from_dict(config.as_dict()) == config
    assert adapter_config("none") is None
    assert adapter_config("lavish", num_latents=64, groups=4, batch_norm=False) == LAVISH_AVQA
    with pytest.raises(AdapterConfigError, match="unknown adapter method 'lora'"):
        adapter_config("lora")
    with pytest.raises(AdapterConfigError, match="no option"):
        adapter_config("avpea", rank=4)


@pytest.mark.parametrize(
    "config,message",
    [
        (AVPEAConfig(reduction=7), "reduction 7 does not divide the token width 96"),
        (BottleneckConfig(bottleneck_dim=0), "bottleneck_dim must be at least 1"),
        (LavishConfig(groups=5), "groups 5 must divide both 96 and 12"),
        (LavishConfig(num_latents=0), "at least one latent token"),
        (BottleneckConfig(activation="tanh"), "unknown activation 'tanh'"),
    ],
)
def test_bad_adapter_configs_fail_clearly(config, message):
    with pytest.raises(AdapterConfigError, match=message):
        DualStreamViT(create_backbone(MICRO_VIT), DualStreamConfig(adapter=config))


def test_bad_backbones_and_inputs_fail_clearly():
    with pytest.raises(DualStreamError, match="needs a timm VisionTransformer"):
        DualStreamViT(torch.nn.Linear(3, 3))
    no_cls = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, class_token=False, global_pool="avg"
    )
    with pytest.raises(DualStreamError, match="no CLS token"):
        DualStreamViT(no_cls)
    with pytest.raises(DualStreamError, match=r"unknown stream placement 'audio\+visual'"):
        DualStreamConfig(streams="audio+visual")

    model = make_model("avpea", "both")
    frames, audio = inputs()
    with pytest.raises(DualStreamError, match="share their leading"):
        model(frames, audio[:1])
    with pytest.raises(DualStreamError, match=r"frames must be a tensor \(\.\.\., 3, height, width\)"):
        model(frames[:, :, :1], audio)
    with pytest.raises(DualStreamError, match="floating point"):
        model(frames, audio.to(torch.int64))
    with pytest.raises(ValueError, match="not a whole number of 8x8 patches"):
        model(frames, audio[..., :30])
    with pytest.raises(AdapterConfigError, match="unknown adapter method"):
        build_dual_stream(MICRO_VIT, "lora")


@pytest.mark.parametrize("method", ["avpea", "lavish_ave"])
def test_any_timm_vit_with_a_cls_token(method):
    """The same model runs on a hub architecture (random weights) at its own patch size and width."""
    torch.manual_seed(0)
    model = DualStreamViT(create_backbone("vit_tiny_patch16_224"), DualStreamConfig(adapter=CONFIGS[method])).eval()
    frames, audio = torch.rand(1, 2, 3, 64, 64), torch.randn(1, 2, 3, 128, 48)
    out = model(frames, audio)
    assert out.visual_tokens.shape == (1, 2, 1 + 16, 192) and out.audio_tokens.shape == (1, 2, 1 + 24, 192)
    visual_ref, audio_ref = frozen_reference(model, frames, audio)
    assert torch.equal(out.visual_tokens, visual_ref) and torch.equal(out.audio_tokens, audio_ref)


@pytest.mark.parametrize("method", ["avpea", "lavish_ave", "houlsby"])
def test_several_other_modalities_are_read_side_by_side(method):
    """``adapter(tokens, others)`` with two other modalities reads their tokens joined along the token
    axis (our generalisation for trimodal models); with one, the tokens as they are."""
    torch.manual_seed(0)
    configs = {
        "avpea": AVPEAConfig(reduction=2),
        "lavish_ave": LavishConfig(reduction=4),
        "houlsby": CONFIGS["houlsby"],
    }
    adapter = configs[method].build(16)
    for gate in adapter.gates().values():
        torch.nn.init.constant_(gate, 1.0)
    adapter.eval()
    x, audio, text = torch.randn(2, 6, 16), torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    both = adapter(x, {"audio": audio, "text": text})
    torch.testing.assert_close(both, adapter(x, {"joined": torch.cat([audio, text], dim=1)}))
    if method != "houlsby":
        assert not torch.allclose(both, adapter(x, {"audio": audio}))


# --------------------------------------------------------------------------------------------
# LAVISH's grouped 1x1 convolutions, computed as grouped matrix products


def lavish_conv_form(adapter, tokens, others):
    """LAVISH's forward as it was written with the ``Conv1d`` modules on the ``(B, D, N)`` layout."""
    from avpet_core.adapters.base import joined_others
    from avpet_core.adapters.lavish import raw_attention

    latents = adapter.latents.expand(tokens.shape[0], -1, -1)
    latents = latents + raw_attention(latents, joined_others(others))
    mixed = tokens + adapter.gate_av * raw_attention(tokens, latents)
    z = adapter.norm_in(mixed).transpose(1, 2)
    z = adapter.bn_up(adapter.up(adapter.act(adapter.bn_down(adapter.down(z)))))
    return adapter.gate * adapter.norm_out(z.transpose(1, 2))


@pytest.mark.parametrize(
    "config",
    [LAVISH_AVE, LAVISH_AVQA, LavishConfig(groups=1), LavishConfig(groups=4, layer_norm=False)],
    ids=["ave", "avqa", "one-group", "four-groups-no-ln"],
)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_lavish_matrix_products_equal_the_grouped_convolutions(config, training):
    from avpet_core.adapters.lavish import grouped_linear

    torch.manual_seed(3)
    adapter = config.build(64)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.normal_(0, 0.3)
        for module in adapter.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    twin = config.build(64)
    twin.load_state_dict(adapter.state_dict())
    adapter.train(training)
    twin.train(training)
    tokens = torch.randn(3, 7, 64, requires_grad=True)
    others = {"audio": torch.randn(3, 5, 64)}
    ours, reference = adapter(tokens, others), lavish_conv_form(twin, tokens, others)
    assert ours.shape == reference.shape == tokens.shape
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # gradients: the same function, so the same derivatives (in float64, where rounding is out of the way)
    adapter.double(), twin.double()
    tokens = tokens.detach().double().requires_grad_()
    others = {"audio": others["audio"].double()}
    ours, reference = adapter(tokens, others), lavish_conv_form(twin, tokens, others)
    weights = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * weights).sum(), [tokens, *adapter.parameters()])
    reference_grads = torch.autograd.grad((reference * weights).sum(), [tokens, *twin.parameters()])
    for a, b in zip(grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for name, buffer in adapter.named_buffers():  # BatchNorm statistics move the same way
        torch.testing.assert_close(buffer, dict(twin.named_buffers())[name], rtol=1e-5, atol=1e-6)
    x, w = torch.randn(9, 64), adapter.down.weight.float()
    torch.testing.assert_close(
        grouped_linear(x, w, config.groups),
        torch.nn.functional.conv1d(x.t()[None], w, groups=config.groups)[0].t(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_lavish_checkpoint_keys_and_shapes_are_the_convolutions():
    adapter = LAVISH_AVE.build(64)
    shapes = {name: tuple(t.shape) for name, t in adapter.state_dict().items()}
    assert shapes["down.weight"] == (8, 32, 1) and shapes["up.weight"] == (64, 4, 1)
    assert shapes["latents"] == (2, 64) and shapes["bn_down.running_mean"] == (8,)
    assert shapes["norm_out.weight"] == (64,)
    assert set(shapes) == {
        "latents",
        "gate_av",
        "gate",
        "down.weight",
        "up.weight",
        "norm_in.weight",
        "norm_in.bias",
        "norm_out.weight",
        "norm_out.bias",
        *(
            f"{bn}.{p}"
            for bn in ("bn_down", "bn_up")
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        ),
    }


@pytest.mark.parametrize(
    "dim,batch,tokens,other", [(64, 3, 5, 7), (96, 4, 37, 97), (96, 16, 97, 37), (768, 2, 197, 49)]
)
def test_avpea_forward_is_its_equations_bit_for_bit(dim, batch, tokens, other):
    """The forward calls the operators directly; it must equal the composition of its parts exactly,
    values and gradients (the book's trained numbers depend on every bit)."""
    torch.manual_seed(0)
    adapter = AVPEAConfig().build(dim)
    with torch.no_grad():
        adapter.g.fill_(0.7)
        adapter.h.fill_(0.3)
    x = torch.randn(batch, tokens, dim, requires_grad=True)
    y = torch.randn(batch, other, dim, requires_grad=True)
    ours = adapter(x, {"audio": y})
    ca, _ = adapter.cross_attention(x, y)
    composed = adapter.h * adapter.bottleneck(torch.cat([ca, x[:, 1:]], dim=1))
    assert torch.equal(ours, composed)
    weights = torch.randn_like(ours)
    inputs = [x, y, *adapter.parameters()]
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs)
    for a, b in zip(ours_grads, torch.autograd.grad((composed * weights).sum(), inputs)):
        assert torch.equal(a, b)
