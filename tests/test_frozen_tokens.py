"""Frozen streams computed once (avpet_core.models.frozen_tokens) give the numbers of the uncached model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from avpet_core import experiments
from avpet_core.analysis import ModalityControl, predict_segments
from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig
from avpet_core.models import build_dual_stream
from avpet_core.models.dual_stream import DualStreamError
from avpet_core.models.frozen_tokens import FrozenTokens, backbone_key, run_streams, with_frozen_tokens

TINY = SynthAVEConfig(num_videos=6, num_eval_videos=3)
TOLERANCE = 0.0  # the cached tokens are the very tensors the uncached forward computes


@pytest.fixture(scope="module")
def tiny_split():
    return SynthAVE(TINY, "train", cache="memory")


@pytest.mark.parametrize("adapter", ["none", "avpea", "lavish", "houlsby"])
@pytest.mark.parametrize("streams", ["none", "audio", "visual"])
def test_cached_forward_equals_the_uncached_one(tiny_split, adapter, streams):
    torch.manual_seed(0)
    model = build_dual_stream("micro_vit", adapter, streams).eval()
    for stream_adapters in model.adapters.values():  # open the gates: the adapters must change the output
        for p in stream_adapters.parameters():
            torch.nn.init.normal_(p, std=0.1)
    cached = with_frozen_tokens(model, tiny_split, batch_size=4)
    expected_frozen = tuple(model.frozen_stream_names())
    assert isinstance(cached, FrozenTokens) and tuple(cached.tokens) == expected_frozen
    batch = torch.utils.data.default_collate([tiny_split[i] for i in range(3)])
    cached_batch = torch.utils.data.default_collate([cached[i] for i in range(3)])
    with torch.no_grad():
        plain, fast = model(batch["frames"], batch["audio"]), run_streams(model, cached_batch)
    for name in ("visual_tokens", "audio_tokens"):
        assert (getattr(plain, name) - getattr(fast, name)).abs().max().item() <= TOLERANCE


def test_both_adapted_streams_are_never_cached(tiny_split):
    model = build_dual_stream("micro_vit", "avpea", "both")
    assert with_frozen_tokens(model, tiny_split) is tiny_split
    tokens = torch.zeros(2, 10, 5, 37, 96)
    with pytest.raises(DualStreamError, match="carries adapters"):
        model(None, torch.zeros(2, 10, 3, 64, 96), frozen={"visual": tokens})


def test_tokens_are_computed_once_per_dataset_stream_and_weights(monkeypatch):
    from avpet_core.models import frozen_tokens

    tiny_split = SynthAVE(TINY, "val", cache="memory")  # a dataset no other test has cached
    calls = []
    compute = frozen_tokens.stream_tokens
    monkeypatch.setattr(frozen_tokens, "stream_tokens", lambda *a, **k: calls.append(a[2]) or compute(*a, **k))
    first, second = (torch.manual_seed(0) and build_dual_stream("micro_vit", "avpea", "audio") for _ in range(2))
    assert backbone_key(first.backbone) == backbone_key(second.backbone)
    a, b = with_frozen_tokens(first, tiny_split), with_frozen_tokens(second, tiny_split)
    assert calls == ["visual"] and a.tokens["visual"] is b.tokens["visual"]
    with torch.no_grad():
        next(second.backbone.parameters()).add_(1.0)  # other weights: other tokens
    with_frozen_tokens(second, tiny_split)
    assert calls == ["visual", "visual"]


@pytest.mark.parametrize("name", ["table4/none", "table4/audio", "table4/visual"])
def test_cached_and_uncached_training_give_the_same_run(name):
    """Two epochs of a Table 4 row (random weights, tiny data): every epoch's loss and validation
    accuracy, the test accuracy, the trained weights and the modality controls agree exactly."""
    experiment = experiments.get_experiment(name)
    experiment = replace(experiment, data=TINY, training=replace(experiment.training, epochs=2, batch_size=2))
    settings = experiments.RunSettings(pretrained=False)
    splits = experiments.datasets(experiment, settings)
    runs = [experiments.run_experiment(experiment, settings, splits=splits, frozen_tokens=c) for c in (False, True)]

    def timeless(run):
        return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in run.fit.history]

    assert timeless(runs[0]) == timeless(runs[1]) and runs[0].test == runs[1].test
    for part in ("head", "model"):
        plain, cached = (getattr(run, part).state_dict() for run in runs)
        assert all(torch.equal(plain[k], cached[k]) for k in plain)
    for remove in ("silence", "blank"):
        control = ModalityControl(splits[2], remove)
        plain = predict_segments(runs[0].model, runs[0].head, control, frozen_tokens=False)
        fast = predict_segments(runs[1].model, runs[1].head, control)
        assert torch.equal(plain[0], fast[0]) and torch.equal(plain[1], fast[1])
