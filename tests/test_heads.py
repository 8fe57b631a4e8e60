"""AVEL heads: shapes, the background-suppression decision rule, losses that train, and their sizes."""

from __future__ import annotations

import pytest
import torch

from avpet_core.evaluation import accuracy as segment_accuracy
from avpet_core.heads import CMBSHead, CMBSHeadConfig, SegmentClassifier
from avpet_core.models import DualStreamOutput

B, T, N, M, D, C = 3, 10, 36, 96, 32, 11  # C labels including background (index 10)


def features(seed: int = 0) -> DualStreamOutput:
    gen = torch.Generator().manual_seed(seed)
    return DualStreamOutput(torch.randn(B, T, 1 + N, D, generator=gen), torch.randn(B, T, 1 + M, D, generator=gen))


def video_labels(seed: int = 0) -> torch.Tensor:
    """One event class per video, events on some segments, background (C-1) elsewhere — AVE's structure."""
    gen = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, C - 1, (B, 1), generator=gen)
    is_event = torch.rand(B, T, generator=gen) < 0.5
    return torch.where(is_event, classes.expand(B, T), torch.full((B, T), C - 1))


@pytest.mark.parametrize("head_class", [SegmentClassifier, CMBSHead])
def test_shapes_loss_and_prediction_range(head_class):
    torch.manual_seed(0)
    head = head_class(D, C)
    out = head(features())
    assert out.segment_logits.shape == (B, T, C)
    loss = head.loss(out, {"labels": video_labels()})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    predictions = head.predict(out)
    assert predictions.shape == (B, T) and predictions.min() >= 0 and predictions.max() <= C - 1


@pytest.mark.parametrize("head_class", [SegmentClassifier, CMBSHead])
def test_heads_fit_a_small_batch(head_class):
    """The losses train: on fixed features whose labels are learnable, accuracy reaches 1."""
    torch.manual_seed(0)
    head = (head_class(D, C, CMBSHeadConfig(hidden=32)) if head_class is CMBSHead else head_class(D, C)).train()
    feats, labels = features(), video_labels()
    # make the labels readable from the features: the label's one-hot is written into both CLS tokens
    code = torch.nn.functional.one_hot(labels, D).float() * 3
    feats = DualStreamOutput(feats.visual_tokens.clone(), feats.audio_tokens.clone())
    feats.visual_tokens[..., 0, :] += code
    feats.audio_tokens[..., 0, :] += code
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        optimiser.zero_grad()
        loss = head.loss(head(feats), {"labels": labels})
        first = loss.item() if first is None else first
        loss.backward()
        optimiser.step()
    head.eval()
    assert loss.item() < 0.2 * first
    assert segment_accuracy(head.predict(head(feats)), labels) == 1.0


def test_cmbs_decision_rule_is_background_suppression():
    head = CMBSHead(D, C).eval()
    out = head(features())
    out.event_logits = torch.tensor([[2.0, -2.0] * (T // 2)] * B)
    out.class_logits = torch.zeros(B, C - 1)
    out.class_logits[:, 4] = 5.0
    predictions = head.predict(out)
    assert predictions[:, 0::2].eq(4).all() and predictions[:, 1::2].eq(C - 1).all()


def test_cmbs_segment_logits_are_a_distribution():
    out = CMBSHead(D, C).eval()(features())
    torch.testing.assert_close(out.segment_logits.exp().sum(-1), torch.ones(B, T))


def test_lavish_head_size_for_vit_b():
    """LAVISH's AVE head on ViT-B/16: 2*768*512 + 512 + 512*29 + 29 parameters."""
    head = SegmentClassifier(768, 29)
    assert sum(p.numel() for p in head.parameters()) == 801_821


def test_segment_accuracy():
    assert segment_accuracy(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 0, 3]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="differ in shape"):
        segment_accuracy(torch.zeros(2, 10), torch.zeros(2, 9))
