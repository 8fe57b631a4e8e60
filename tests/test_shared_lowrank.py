"""Shared low-rank multimodal Transformers: the factorised layer, sharing, counts, fusion, the CLI table."""

from __future__ import annotations

import copy
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
from avpet_core.train import TrainConfig, fit, parameter_groups

TINY_STEMS = StemConfig(visual_channels=(4, 8), audio_channels=(4, 8), num_mel_bins=16)
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


@pytest.mark.parametrize(
    "config", ALL_VARIANTS, ids=lambda c: f"r{c.rank}-L{int(c.share_layers)}-M{int(c.share_modalities)}-{c.fusion}"
)
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
    model = build_shared_transformer(
        replace(PAPER_TRANSFORMER, rank=None, share_layers=False, share_modalities=False), device="meta"
    )
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
    assert [(r["variant"], r["parameters"]) for r in result["rows"]][-1] == (
        "layers + modalities + low rank",
        3_843_840,
    )
    assert len(result["rows"]) == 5


def test_cli_default_model_is_unchanged(capsys):
    assert cli.main(["params", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backbone"] == "micro_vit"


@pytest.mark.parametrize(
    "extra", [["--adapter", "avpea"], ["--streams", "audio"], ["--backbone", "vit_base_patch16_224"]]
)
def test_cli_refuses_dual_stream_options(capsys, extra):
    assert cli.main(["params", "--model", "shared-lowrank", *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "dual-stream only" in captured.err


def test_cli_refuses_unknown_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["params", "--model", "bert"])
    assert exit_info.value.code == 2


# -- pretraining and evaluation ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def few_videos():
    from avpet_core.data import load_videos
    from avpet_core.data.synthetic import SynthAVEConfig

    return load_videos(SynthAVEConfig(num_videos=16, num_eval_videos=8, num_segments=4), "train")


def small_model(rank=8, **changes) -> SharedMultimodalTransformer:
    torch.manual_seed(0)
    stems = StemConfig(visual_channels=(8, 16), audio_channels=(8, 16), num_mel_bins=64)
    return SharedMultimodalTransformer(replace(TINY, rank=rank, stems=stems, **changes))


def test_video_tensors_and_labels(few_videos):
    assert few_videos.frames.shape == (16, 4, 3, 48, 48)
    assert few_videos.audio.shape == (16, 4, 1, 64, 96)
    # the video label is its event class if any segment is an event, else background (the last index)
    for labels, video_label in zip(few_videos.labels, few_videos.video_labels):
        events = labels[labels != few_videos.num_classes - 1]
        assert video_label == (events[0] if len(events) else few_videos.num_classes - 1)
        assert (events == video_label).all()


def test_negative_sampling_never_picks_the_positive_and_content_aware_prefers_similar():
    from avpet_core.tasks.multimodal_pretraining import sample_negatives

    g = torch.Generator().manual_seed(0)
    pool = torch.cat(
        [torch.randn(1, 8).repeat(10, 1) + 0.01 * torch.randn(10, 8), torch.randn(30, 8)]
    )  # 10 near-duplicates
    positives = torch.arange(10)
    counts = {}
    for mode in ("content", "random"):
        picks = sample_negatives(pool[positives], positives, pool, 5, mode, 0.1, g)
        assert picks.shape == (10, 5)
        assert not (picks == positives.unsqueeze(1)).any()
        assert all(len(set(row.tolist())) == 5 for row in picks)
        counts[mode] = (picks < 10).float().mean().item()  # share of negatives among the near-duplicates
    assert counts["content"] > 0.9 > 0.5 > counts["random"]


def test_pretraining_losses_decrease_on_a_small_run(few_videos):
    from avpet_core.backbones.micro_vit import deterministic_cpu
    from avpet_core.pretraining import pretrain
    from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig

    with deterministic_cpu(2):
        model = small_model()
        training = TrainConfig(epochs=20, batch_size=8, model_lr=1e-3, head_lr=1e-3, progress=False)
        history = pretrain(model, few_videos, MultimodalPretrainConfig(num_negatives=6), training)
    assert set(history) >= {"mep_visual", "mep_audio", "pair", "total"}
    assert all(len(values) == 40 for values in history.values())  # 20 epochs of 16 videos in batches of 8
    first, last = (sum(history["total"][s]) / 8 for s in (slice(0, 8), slice(-8, None)))
    assert last < first - 0.2, (first, last)
    for name in ("mep_visual", "mep_audio"):
        assert sum(history[name][-8:]) < sum(history[name][:8]), name
    # and the rotations are still orthogonal after the optimiser's steps
    for linear in (model.layers[0].q, model.layers[0].ffn_out):
        s = linear.orthogonal(2).detach().double()
        torch.testing.assert_close(s @ s.T, torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0)


def test_pretraining_is_deterministic(few_videos):
    from avpet_core.backbones.micro_vit import deterministic_cpu
    from avpet_core.pretraining import pretrain
    from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig

    runs = []
    for _ in range(2):
        with deterministic_cpu(2):
            training = TrainConfig(epochs=1, batch_size=4, progress=False)
            runs.append(
                pretrain(small_model(), few_videos, MultimodalPretrainConfig(negatives="random"), training)["total"]
            )
    assert len(runs[0]) == 4 and runs[0] == runs[1]


def test_the_training_loop_trains_a_model_without_adapters_whole(few_videos):
    """The loop of the AVEL/AVQA runs serves the end-to-end model: every parameter of the model and
    of the head is in exactly one group, norms and biases without weight decay."""
    from avpet_core.tasks.multimodal_pretraining import PretrainHeads

    model = small_model()
    heads = PretrainHeads(model.config.dim)
    groups = parameter_groups(model, heads, TrainConfig())
    grouped = [id(p) for g in groups for p in g["params"]]
    expected = [id(p) for p in (*model.parameters(), *heads.parameters())]
    assert len(grouped) == len(set(grouped)) and sorted(grouped) == sorted(expected)
    assert {g["name"] for g in groups} == {"model", "model/no_decay", "head", "head/no_decay"}
    assert all(p.ndim < 2 for g in groups if g["name"].endswith("no_decay") for p in g["params"])


def test_pretraining_without_evaluation_and_a_checkpoint_of_the_whole_model(few_videos, tmp_path):
    from avpet_core.checkpoints import CheckpointError, load_trained
    from avpet_core.tasks.multimodal_pretraining import (
        MultimodalPretrainConfig,
        MultimodalPretrainingTask,
        PretrainHeads,
    )

    model = small_model()
    heads = PretrainHeads(model.config.dim, MultimodalPretrainConfig(num_negatives=6))
    task = MultimodalPretrainingTask()
    result = fit(model, heads, task, few_videos, None, TrainConfig(epochs=2, batch_size=8, progress=False))
    assert [sorted(row) for row in result.history] == [["epoch", "seconds", "train_loss"]] * 2
    assert result.best == result.last
    assert len(heads.history["total"]) == 4
    assert result.last["train_loss"] == pytest.approx(sum(heads.history["total"][2:]) / 2)
    # a model trained whole checkpoints whole, through the same loop and the same files
    fit(model, heads, task, few_videos, None, TrainConfig(epochs=1, batch_size=8, progress=False), tmp_path / "run")
    fresh, fresh_heads = small_model(), PretrainHeads(model.config.dim)
    load_trained(tmp_path / "run" / "last", fresh, fresh_heads)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    with pytest.raises(CheckpointError, match="does not fit this model.*SharedMultimodalTransformer"):
        load_trained(tmp_path / "run" / "last", small_model(rank=None), fresh_heads)


def test_probe_finetune_and_memory(few_videos):
    from avpet_core.evaluation import linear_probe
    from avpet_core.memory import training_memory
    from avpet_core.pretraining import classification_accuracy as accuracy
    from avpet_core.pretraining import extract_features, finetune

    model = small_model()
    features = extract_features(model, few_videos)
    assert features.shape == (16, 64)
    probe = linear_probe(features, few_videos.video_labels, features, few_videos.video_labels, few_videos.num_classes)
    assert probe > 0.9  # 16 points in 64 dimensions: the probe can fit its own training set
    training = TrainConfig(epochs=2, batch_size=4, progress=False)
    before = copy.deepcopy(model.state_dict())
    classifier, result = finetune(model, few_videos, training, val_videos=few_videos)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[-1]["val_accuracy"] == accuracy(classifier, few_videos)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy is fine-tuned
    # end to end: the stems, the shared layer and the head all moved
    moved = {
        name.split(".")[0] for name, v in classifier.model.state_dict().items() if not torch.equal(before[name], v)
    }
    assert {"visual_stem", "audio_stem", "layers"} <= moved, moved
    frames, audio = few_videos.batch(torch.arange(4))
    memory = [training_memory(classifier, frames, audio, few_videos.video_labels[:4]) for _ in range(2)]
    assert memory[0] == memory[1] and memory[0].activations > 0
    n = sum(p.numel() for p in classifier.parameters())
    assert memory[0].parameters == 4 * n and memory[0].optimiser == 8 * n
    # sharing shrinks weights, gradients and Adam state; the saved activations stay (the layer still runs L times)
    unshared = small_model(rank=None, share_layers=False, share_modalities=False)
    unshared_classifier, _ = finetune(unshared, few_videos, TrainConfig(epochs=1, batch_size=8, progress=False))
    unshared_memory = training_memory(unshared_classifier, frames, audio, few_videos.video_labels[:4])
    assert unshared_memory.parameters > memory[0].parameters


def test_detached_targets_keep_the_stems_gradient_out_of_the_candidates(few_videos):
    """With ``detach_targets`` the MEP candidates carry no gradient: the stems learn only through the
    Transformer inputs. Cutting that input path leaves the stems without any gradient; without
    detaching, the candidates alone give them one."""
    from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig, PretrainHeads, pretraining_losses

    frames, audio = few_videos.batch(torch.arange(4))

    def stem_gradients(detach_targets: bool, cut_inputs: bool) -> list[float]:
        model = small_model()
        heads = PretrainHeads(model.config.dim)
        if cut_inputs:  # the Transformers see the embeddings' values but pass no gradient back to the stems
            encode = model.encode
            model.encode = lambda v, a, vm=None, am=None: encode(v.detach(), a.detach(), vm, am)
        config = MultimodalPretrainConfig(num_negatives=6, negatives="random", detach_targets=detach_targets)
        losses = pretraining_losses(model, heads, frames, audio, config, torch.Generator().manual_seed(0))
        (losses["mep_visual"] + losses["mep_audio"]).backward()
        return [
            0.0 if p.grad is None else p.grad.abs().sum().item()
            for stem in (model.visual_stem, model.audio_stem)
            for p in stem.parameters()
        ]

    assert all(g == 0 for g in stem_gradients(detach_targets=True, cut_inputs=True))
    assert all(g > 0 for g in stem_gradients(detach_targets=False, cut_inputs=True))
    # end to end: through the Transformer inputs the stems still get a gradient
    assert all(g > 0 for g in stem_gradients(detach_targets=True, cut_inputs=False))


def test_content_negatives_mix_hard_and_uniform_draws():
    from avpet_core.tasks.multimodal_pretraining import sample_negatives

    torch.manual_seed(0)  # the pool below: the test is about the sampler, not about one lucky pool
    g = torch.Generator().manual_seed(0)
    near = torch.randn(1, 8).repeat(10, 1) + 0.01 * torch.randn(10, 8)  # 10 near-duplicates
    pool = torch.cat([near, torch.randn(90, 8)])
    positives = torch.arange(10).repeat(20)  # 200 draws
    for fraction, hard in ((0.5, 4), (0.25, 2), (1.0, 8), (0.0, 0)):
        picks = sample_negatives(pool[positives], positives, pool, 8, "content", 0.1, g, hard_fraction=fraction)
        assert picks.shape == (200, 8)
        assert not (picks == positives.unsqueeze(1)).any()
        assert all(len(set(row.tolist())) == 8 for row in picks)  # hard and uniform draws never repeat
        # the first round(k * fraction) columns are drawn by content: nearly all among the 9 other near-duplicates
        # (0.94-0.98 here; over pools drawn with seeds 0-7 the share ran from 0.87 to 0.99)
        if hard:
            assert (picks[:, :hard] < 10).float().mean() > 0.9
        # the others uniformly from the 99 - hard candidates left: about (9 - hard) / (99 - hard) near-duplicates
        if hard < 8:
            share = (picks[:, hard:] < 10).float().mean().item()
            assert abs(share - (9 - hard) / (99 - hard)) < 0.05, (fraction, share)
    # random mode ignores the fraction
    picks = sample_negatives(pool[positives], positives, pool, 8, "random", 0.1, g, hard_fraction=1.0)
    assert (picks < 10).float().mean() < 0.2


def test_config_refuses_bad_fraction_and_objective():
    from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig

    with pytest.raises(ValueError, match="hard_fraction"):
        MultimodalPretrainConfig(hard_fraction=1.5)
    with pytest.raises(ValueError, match="pair_objective"):
        MultimodalPretrainConfig(pair_objective="triplet")
    assert MultimodalPretrainConfig().detach_targets and MultimodalPretrainConfig().hard_fraction == 0.5


def test_audio_visual_contrastive_finds_each_videos_own_audio():
    from avpet_core.losses import audio_visual_contrastive

    torch.manual_seed(0)
    visual = torch.randn(6, 16)
    owner = torch.tensor([0, 1, 2, 4, 5, 3])  # audio j belongs to video owner[j]
    audio = visual[owner] + 0.01 * torch.randn(6, 16)
    loss, accuracy = audio_visual_contrastive(visual, audio, owner, temperature=0.1)
    assert accuracy == 1.0 and loss < 0.01
    shuffled_loss, shuffled_accuracy = audio_visual_contrastive(visual, audio, torch.arange(6), temperature=0.1)
    assert shuffled_accuracy < 1.0 and shuffled_loss > 1.0


def test_unimodal_summaries_see_one_modality(few_videos):
    frames, audio = tiny_inputs()
    _, other_audio = tiny_inputs(seed=5)
    for fusion in ("mid", "late"):
        torch.manual_seed(0)
        model = SharedMultimodalTransformer(replace(TINY, fusion=fusion)).eval()
        with torch.no_grad():
            a, b = model(frames, audio), model(frames, other_audio)
        assert a.unimodal_summary.shape == (2, 64)
        torch.testing.assert_close(
            a.unimodal_summary[:, :32], b.unimodal_summary[:, :32]
        )  # the visual half ignores audio
        assert not torch.allclose(a.unimodal_summary[:, 32:], b.unimodal_summary[:, 32:])
        if fusion == "late":
            torch.testing.assert_close(a.unimodal_summary, a.summary)
    assert SharedMultimodalTransformer(replace(TINY, fusion="early"))(frames, audio).unimodal_summary is None


def test_contrastive_pair_objective_runs_and_needs_unimodal_transformers(few_videos):
    from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig, PretrainHeads, pretraining_losses

    frames, audio = few_videos.batch(torch.arange(4))
    for objective, keys in (("contrastive", {"contrastive"}), ("both", {"contrastive", "pair"}), ("binary", {"pair"})):
        model = small_model()
        config = MultimodalPretrainConfig(num_negatives=6, pair_objective=objective)
        losses = pretraining_losses(
            model, PretrainHeads(model.config.dim), frames, audio, config, torch.Generator().manual_seed(0)
        )
        assert keys <= set(losses) and not ({"contrastive", "pair"} - keys) & set(losses)
        expected = losses["mep_visual"] + losses["mep_audio"] + sum(losses[k] for k in keys)
        torch.testing.assert_close(losses["total"], expected)
    model = small_model(fusion="early")
    with pytest.raises(ValueError, match="mid or late"):
        pretraining_losses(
            model,
            PretrainHeads(model.config.dim),
            frames,
            audio,
            MultimodalPretrainConfig(num_negatives=6, pair_objective="contrastive"),
            torch.Generator().manual_seed(0),
        )


def test_trainable_target_gradients_repeat_exactly_without_deterministic_mode():
    """InfoNCE gathers the candidates' cosines instead of indexing the pool with repeated rows, so
    the stems' gradient through trainable candidates is the same on every run (2 threads, no
    ``torch.use_deterministic_algorithms``)."""
    from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig, PretrainHeads, pretraining_losses

    config = replace(TINY, dim=64, heads=4, ffn_dim=128, num_segments=10)
    frames, audio = tiny_inputs(batch=16, segments=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients = []
        for _ in range(4):
            torch.manual_seed(0)
            model = SharedMultimodalTransformer(config)
            heads = PretrainHeads(64)
            losses = pretraining_losses(
                model,
                heads,
                frames,
                audio,
                MultimodalPretrainConfig(detach_targets=False),
                torch.Generator().manual_seed(0),
            )
            losses["total"].backward()
            gradients.append(torch.cat([p.grad.flatten() for p in model.visual_stem.parameters()]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(g, gradients[0]) for g in gradients[1:])


def test_the_paper_size_low_rank_model_pretrains_and_fine_tunes(few_videos):
    """The configuration of chapter 8's paper-size parameter set (D 768, L 6, 12 heads, FFN 3072,
    rank 128, the four-stage stems) runs one step of each stage on CPU."""
    from avpet_core.models.stems import PAPER_STEMS
    from avpet_core.pretraining import finetune, pretrain
    from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig

    config = sharing_variants(
        replace(PAPER_TRANSFORMER, stems=replace(PAPER_STEMS, temporal_kernel=1, num_mel_bins=64))
    )[-1].config
    torch.manual_seed(0)
    model = SharedMultimodalTransformer(config)
    assert model.transformer_parameters() == 3_843_840
    training = TrainConfig(epochs=1, batch_size=16, progress=False)
    history = pretrain(model, few_videos, MultimodalPretrainConfig(), training)
    assert len(history["total"]) == 1 and all(torch.isfinite(torch.tensor(v)).all() for v in history.values())
    classifier, result = finetune(model, few_videos, training)
    assert classifier(*few_videos.batch(torch.arange(2))).shape == (2, few_videos.num_classes)
    assert torch.isfinite(torch.tensor(result.last["train_loss"]))
