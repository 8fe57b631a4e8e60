"""Shared low-rank multimodal Transformers: the factorised layer, sharing, counts, fusion, the CLI table."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from avpet_core import cli
from avpet_core.models.shared_lowrank import (
    FUSIONS,
    PAPER_TRANSFORMER,
    FactorisedLinear,
    SharedMultimodalTransformer,
    SharedTransformerConfig,
    SharedTransformerError,
    build_shared_transformer,
    closed_form_transformer_parameters,
    sharing_variants,
    transformer_parameter_table,
)
from avpet_core.models.stems import StemConfig

TINY_STEMS = StemConfig(visual_channels=(4, 8), audio_channels=(4, 8))
TINY = SharedTransformerConfig(dim=32, depth=2, heads=4, ffn_dim=64, rank=8, num_segments=4, stems=TINY_STEMS)


def tiny_inputs(batch: int = 2, segments: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, segments, 3, 16, 16, generator=g), torch.randn(batch, segments, 3, 16, 24, generator=g)


# -- the factorised layer ---------------------------------------------------------------------------


def test_factorised_layer_equals_its_dense_reconstruction_on_the_normalised_input():
    torch.manual_seed(0)
    layer = FactorisedLinear(in_features=12, out_features=20, rank=6, groups=3).double()
    x = torch.randn(5, 7, 12, dtype=torch.float64)
    for group in range(3):
        weight = layer.dense_weight(group)
        assert weight.shape == (20, 12)
        # U S V^T x / ||V^T x|| + b == U S normalize(V^T x) + b
        scale = (x @ layer.V[group]).norm(dim=-1, keepdim=True)
        expected = (x @ weight.T) / scale + layer.bias
        torch.testing.assert_close(layer(x, group), expected, rtol=1e-10, atol=1e-10)
    # the groups differ (private V_m, S_m) but share U and b
    assert not torch.allclose(layer(x, 0), layer(x, 1))


def test_output_is_invariant_to_the_input_scale_along_the_code():
    torch.manual_seed(1)
    layer = FactorisedLinear(8, 8, rank=4).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer(5.0 * x))


def test_rotation_stays_orthogonal_after_training_steps():
    torch.manual_seed(2)
    layer = FactorisedLinear(16, 16, rank=8, groups=2)
    optimiser = torch.optim.SGD(layer.parameters(), lr=0.5)
    x, target = torch.randn(32, 16), torch.randn(32, 16)
    start = layer.A.detach().clone()
    for _ in range(20):
        optimiser.zero_grad()
        loss = sum(F.mse_loss(layer(x, g), target) for g in range(2))
        loss.backward()
        optimiser.step()
    assert (layer.A - start).abs().max() > 1e-3  # A really moved
    for g in range(2):
        s = layer.orthogonal(g).double()
        torch.testing.assert_close(s @ s.T, torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0)
        assert abs(abs(torch.linalg.det(s).item()) - 1) < 1e-5


def test_gradients_reach_u_v_and_s_of_every_group():
    model = SharedMultimodalTransformer(TINY)
    output = model(*tiny_inputs())
    (output.summary.square().sum() + output.visual.sum() + output.audio.sum()).backward()
    layer = model.layers[0]
    assert len(model.layers) == 1
    for name in ("q", "k", "v", "attn_out", "ffn_in", "ffn_out"):
        linear = getattr(layer, name)
        assert isinstance(linear, FactorisedLinear)
        assert linear.U.grad is not None and linear.U.grad.abs().sum() > 0, name
        for group in range(3):  # visual, audio, multimodal each own V_m and A_m
            assert linear.V.grad[group].abs().sum() > 0, (name, group)
            assert linear.A.grad[group].abs().sum() > 0, (name, group)


# -- sharing and counts ---------------------------------------------------------------------------


ALL_VARIANTS = [
    replace(TINY, rank=rank, share_layers=layers, share_modalities=modalities, fusion=fusion)
    for rank, layers, modalities, fusion in itertools.product((None, 8), (False, True), (False, True), FUSIONS)
]


@pytest.mark.parametrize("config", ALL_VARIANTS, ids=lambda c: f"r{c.rank}-L{int(c.share_layers)}-M{int(c.share_modalities)}-{c.fusion}")
def test_module_count_equals_closed_form_for_every_variant(config):
    model = build_shared_transformer(config, device="meta")
    assert model.transformer_parameters() == closed_form_transformer_parameters(config)
    # every (Transformer, depth) pair uses one of the held layers, and together they use all of them
    used = {id(model.layer_for(t, d)[0]) for t in config.transformers for d in range(config.depth)}
    assert used == {id(layer) for layer in model.layers}
    assert len(model.layers) == config.num_layers


def test_sharing_reuses_one_layer_at_every_depth_and_for_every_transformer():
    model = SharedMultimodalTransformer(replace(TINY, rank=None))
    layers = {(t, d): model.layer_for(t, d) for t in ("visual", "audio", "multimodal") for d in range(2)}
    assert len({id(layer) for layer, _ in layers.values()}) == 1
    assert [layers[(t, 0)][1] for t in ("visual", "audio", "multimodal")] == [0, 1, 2]
    unshared = SharedMultimodalTransformer(replace(TINY, share_layers=False, share_modalities=False))
    assert len({id(unshared.layer_for(t, d)[0]) for t in ("visual", "audio", "multimodal") for d in range(2)}) == 6


def test_paper_table_counts_and_reduction():
    rows = transformer_parameter_table(PAPER_TRANSFORMER)
    assert [r["variant"] for r in rows] == [v.name for v in sharing_variants()]
    assert [r["parameters"] for r in rows] == [127_581_696, 21_263_616, 42_527_232, 7_087_872, 3_843_840]
    assert [round(r["parameters"] / 1e6, 2) for r in rows] == [127.58, 21.26, 42.53, 7.09, 3.84]
    assert all(r["parameters"] == r["closed_form"] for r in rows)
    assert round(100 * rows[-1]["reduction"]) == 97
    # one BERT-base layer (7,087,872) x 3 Transformers x 6 depths is the unshared figure
    assert rows[0]["parameters"] == 18 * rows[3]["parameters"]
    # counting only A's strict upper triangle (its degrees of freedom) gives 3.70M instead
    assert closed_form_transformer_parameters(PAPER_TRANSFORMER, free_rotation_only=True) == 3_695_232


def test_paper_sized_model_builds_on_meta_without_memory():
    model = build_shared_transformer(replace(PAPER_TRANSFORMER, rank=None, share_layers=False, share_modalities=False), device="meta")
    assert all(p.is_meta for p in model.parameters())


def test_bad_configs_are_refused():
    with pytest.raises(SharedTransformerError, match="fusion"):
        SharedTransformerConfig(fusion="middle")
    with pytest.raises(SharedTransformerError, match="divisible"):
        SharedTransformerConfig(dim=100, heads=12)
    with pytest.raises(SharedTransformerError, match="rank"):
        SharedTransformerConfig(rank=0)


# -- fusion ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("rank", [None, 8])
def test_fusion_output_shapes(fusion, rank):
    config = replace(TINY, fusion=fusion, rank=rank)
    model = SharedMultimodalTransformer(config)
    frames, audio = tiny_inputs(batch=3)
    output = model(frames, audio)
    assert output.visual.shape == (3, 4, 32) and output.audio.shape == (3, 4, 32)
    assert output.summary.shape == (3, 64)
    assert torch.isfinite(output.summary).all()
    # a clip of several frames per segment goes through the same 3D stem
    clips = frames.unsqueeze(3).expand(-1, -1, -1, 2, -1, -1)
    assert model(clips, audio).summary.shape == (3, 64)


def test_late_fusion_keeps_modalities_apart_and_mid_fusion_mixes_them():
    frames, audio = tiny_inputs()
    _, other_audio = tiny_inputs(seed=5)
    for fusion, mixes in (("late", False), ("mid", True), ("early", True)):
        torch.manual_seed(0)
        model = SharedMultimodalTransformer(replace(TINY, fusion=fusion)).eval()
        with torch.no_grad():
            a, b = model(frames, audio), model(frames, other_audio)
        assert torch.allclose(a.visual, b.visual) != mixes, fusion


# -- the command line -----------------------------------------------------------------------------


def test_cli_prints_the_five_row_table(capsys):
    assert cli.main(["params", "--model", "shared-lowrank"]) == 0
    out = capsys.readouterr().out
    for name, count, change in (
        ("no sharing", "127.58M", "0%"),
        ("across layers", "21.26M", "-83%"),
        ("across modalities", "42.53M", "-67%"),
        ("layers + modalities", "7.09M", "-94%"),
        ("layers + modalities + low rank", "3.84M", "-97%"),
    ):
        assert any(line.startswith(name) and line.split()[-2:] == [count, change] for line in out.splitlines()), name


def test_cli_json(capsys):
    assert cli.main(["params", "--model", "shared-lowrank", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "shared-lowrank"
    assert [(r["variant"], r["parameters"]) for r in result["rows"]][-1] == ("layers + modalities + low rank", 3_843_840)
    assert len(result["rows"]) == 5


def test_cli_default_model_is_unchanged(capsys):
    assert cli.main(["params", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backbone"] == "micro_vit"


@pytest.mark.parametrize("extra", [["--adapter", "avpea"], ["--streams", "audio"], ["--backbone", "vit_base_patch16_224"]])
def test_cli_refuses_dual_stream_options(capsys, extra):
    assert cli.main(["params", "--model", "shared-lowrank", *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "dual-stream only" in captured.err


def test_cli_refuses_unknown_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["params", "--model", "bert"])
    assert exit_info.value.code == 2
