"""AVQA head (compact AVST): shapes, padding, the answer + match loss, fitting, metrics, bad inputs, size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avpet_core.data.music_avqa import PAD_ID, QUESTION_TYPES, accuracy_by_type
from avpet_core.heads.avqa import AVQAHeadConfig, AVQAOutput, AVSTHead
from avpet_core.models import DualStreamOutput

B, T, N, M, D = 4, 5, 9, 12, 32
VOCAB, ANSWERS, LQ = 20, 7, 8
SMALL = AVQAHeadConfig(hidden=32, word_dim=16, heads=4)


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: one intra-op thread is fastest and does not fight a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def features(batch: int = B, seed: int = 0) -> DualStreamOutput:
    gen = torch.Generator().manual_seed(seed)
    return DualStreamOutput(
        torch.randn(batch, T, 1 + N, D, generator=gen), torch.randn(batch, T, 1 + M, D, generator=gen)
    )


def questions(batch: int = B, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids in ``[2, VOCAB)`` padded with PAD_ID to ``LQ``, lengths in ``[2, LQ]`` (one full-length)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, LQ + 1, (batch,), generator=gen)
    lengths[0] = LQ
    ids = torch.randint(2, VOCAB, (batch, LQ), generator=gen)
    ids[torch.arange(LQ) >= lengths.unsqueeze(1)] = PAD_ID
    return ids, lengths


def q(ids: torch.Tensor, lengths: torch.Tensor) -> dict:
    """The question part of a batch, as the head reads it."""
    return {"question": ids, "question_length": lengths}


def head(config: AVQAHeadConfig = SMALL, seed: int = 0) -> AVSTHead:
    torch.manual_seed(seed)
    return AVSTHead(D, VOCAB, ANSWERS, config)


def test_shapes_and_prediction_range():
    out = head().eval()(features(), q(*questions()))
    assert isinstance(out, AVQAOutput)
    assert out.answer_logits.shape == (B, ANSWERS)
    assert out.match_logits.shape == (B, T, 2) and out.negative_match_logits.shape == (B, T, 2)
    assert out.spatial_weights.shape == (B, T, N)
    assert out.audio_temporal_weights.shape == (B, T) and out.visual_temporal_weights.shape == (B, T)
    for weights in (out.spatial_weights, out.audio_temporal_weights, out.visual_temporal_weights):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    predictions = head().predict(out)
    assert predictions.shape == (B,) and predictions.dtype == torch.int64
    assert predictions.min() >= 0 and predictions.max() < ANSWERS


def test_padding_and_tokens_past_the_length_are_ignored():
    model = head().eval()
    ids, lengths = questions()
    reference = model(features(), q(ids, lengths)).answer_logits
    longer = torch.cat([ids, torch.full((B, 5), PAD_ID)], dim=1)
    torch.testing.assert_close(model(features(), q(longer, lengths)).answer_logits, reference)
    garbage = torch.where(longer == PAD_ID, torch.randint(2, VOCAB, longer.shape), longer)
    torch.testing.assert_close(model(features(), q(garbage, lengths)).answer_logits, reference)


def test_negative_pairs_are_the_batch_rolled_by_one():
    """Negative of sample b: its own audio with the frames of sample b-1, grounded by that audio."""
    model = head().eval()
    feats, (ids, lengths) = features(), questions()
    out = model(feats, q(ids, lengths))
    swapped = DualStreamOutput(feats.visual_tokens.roll(1, dims=0), feats.audio_tokens)
    torch.testing.assert_close(model(swapped, q(ids, lengths)).match_logits, out.negative_match_logits)


def test_loss_is_answer_plus_weighted_match_and_skips_match_for_one_sample():
    model = head().eval()
    ids, lengths = questions()
    answers = torch.arange(B) % ANSWERS
    out = model(features(), q(ids, lengths))
    answer_term = F.cross_entropy(out.answer_logits, answers)
    logits = torch.cat([out.match_logits.flatten(0, 1), out.negative_match_logits.flatten(0, 1)])
    targets = torch.cat([torch.ones(B * T), torch.zeros(B * T)]).long()
    match_term = F.cross_entropy(logits, targets)
    torch.testing.assert_close(model.loss(out, {"answer": answers}), answer_term + 0.5 * match_term)
    assert set(model.loss_terms(out, {"answer": answers})) == {"answer", "match"}

    single = model(features(batch=1), q(ids[:1], lengths[:1]))
    assert single.negative_match_logits is None
    assert set(model.loss_terms(single, {"answer": answers[:1]})) == {"answer"}
    expected = F.cross_entropy(single.answer_logits, answers[:1])
    torch.testing.assert_close(model.loss(single, {"answer": answers[:1]}), expected)


def test_loss_reaches_every_parameter():
    model = head().train()
    ids, lengths = questions()
    out = model(features(), q(ids, lengths))
    model.loss(out, {"answer": torch.arange(B) % ANSWERS}).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_head_fits_a_small_batch_and_reports_accuracy_by_type():
    """Answers readable from the question (its first word) are learnt to accuracy 1 in 25 steps."""
    batch = 12
    model = head(AVQAHeadConfig(hidden=32, word_dim=16, heads=4, dropout=0.0)).train()
    feats, (ids, lengths) = features(batch), questions(batch)
    answers = torch.arange(batch) % ANSWERS
    ids[:, 0] = 2 + answers  # the first word names the answer
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        optimiser.zero_grad()
        loss = model.loss(model(feats, q(ids, lengths)), {"answer": answers})
        first = loss.item() if first is None else first
        loss.backward()
        optimiser.step()
    model.eval()
    assert loss.item() < 0.5 * first
    predictions = model.predict(model(feats, q(ids, lengths)))
    types = torch.arange(batch) % len(QUESTION_TYPES)
    metrics = accuracy_by_type(predictions == answers, types)
    assert metrics["overall"] == 1.0
    assert {"Audio", "Visual", "Audio-Visual", "Audio-Visual/Temporal"} <= set(metrics)


def test_bad_inputs_raise_clear_errors():
    model = head().eval()
    ids, lengths = questions()
    with pytest.raises(ValueError, match="question_length"):
        model(features(), q(ids, lengths[:-1]))
    with pytest.raises(ValueError, match=r"question lengths must lie in \[1, 8\]"):
        model(features(), q(ids, torch.full((B,), LQ + 1)))
    with pytest.raises(ValueError, match=r"question lengths must lie in \[1, 8\]"):
        model(features(), q(ids, torch.zeros(B, dtype=torch.int64)))
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(features(batch=B - 1), q(ids, lengths))
    feats = features()
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(DualStreamOutput(feats.visual_tokens, feats.audio_tokens[:-1]), q(ids, lengths))
    with pytest.raises(ValueError, match="segments"):
        model(DualStreamOutput(feats.visual_tokens, feats.audio_tokens[:, :-1]), q(ids, lengths))
    with pytest.raises(ValueError, match="token ids must lie"):
        model(feats, q(ids.clamp(min=1) + VOCAB, lengths))
    with pytest.raises(ValueError, match="answers for a batch of"):
        model.loss(model(feats, q(ids, lengths)), {"answer": torch.zeros(B - 1, dtype=torch.int64)})
    with pytest.raises(ValueError, match="does not divide"):
        AVQAHeadConfig(hidden=30, heads=4)


def test_avst_size_for_vit_b():
    """hidden=512 (AVST's width), D=768, 93 question tokens, 42 answers: 8,343,596 parameters.

    embedding 93*512 + LSTM 4*512*(512+512) + 8*512 + question Linear 512*512+512
    + three Linear(768 -> 512) + grounding Linear(1024 -> 512) + match 1024*512+512 + 512*2+2
    + two temporal blocks (attention 4*512^2 + 4*512, feed-forward 2*(512^2+512), LayerNorm 2*512)
    + fusion Linear(1024 -> 512) + answer 512*42+42.
    """
    model = AVSTHead(768, 93, 42)
    assert sum(p.numel() for p in model.parameters()) == 8_343_596
    assert model.config.hidden == 512 and model.config.match_weight == 0.5
