"""Gates over training, per-segment predictions, confusion matrices and modality controls."""

from __future__ import annotations

import pytest
import torch

from avpet_core.analysis import (
    GateRecorder,
    ModalityControl,
    adapter_gates,
    confusion_matrix,
    predict_segments,
    silent_audio_image,
)
from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig
from avpet_core.heads import SegmentClassifier
from avpet_core.models import build_dual_stream
from avpet_core.tasks import AVELTask
from avpet_core.train import TrainConfig, evaluate, fit

DATA = SynthAVEConfig(num_videos=8, num_eval_videos=4)
CONFIG = TrainConfig(epochs=2, batch_size=4, model_lr=1e-2, head_lr=1e-2, progress=False, eval_batch_size=4)


@pytest.fixture(scope="module")
def splits():
    return SynthAVE(DATA, "train", cache="memory"), SynthAVE(DATA, "val", cache="memory")


def model_and_head(method="avpea", streams="both"):
    torch.manual_seed(0)
    model = build_dual_stream("micro_vit", method, streams)
    return model, SegmentClassifier(model.embed_dim, DATA.num_classes + 1, hidden=32)


@pytest.mark.parametrize(
    "method, streams, sites, names",
    [
        ("avpea", "both", ("attn",), ("g", "h")),
        ("avpea", "audio", ("attn",), ("g", "h")),
        ("lavish", "visual", ("attn", "mlp"), ("gate_av", "gate")),
        ("houlsby", "both", ("attn",), ("h",)),
    ],
)
def test_every_gate_of_every_block_is_found_and_starts_at_zero(method, streams, sites, names):
    model, _ = model_and_head(method, streams)
    gates = adapter_gates(model)
    expected_streams = ("visual", "audio") if streams == "both" else (streams,)
    assert set(gates) == {(s, site, n) for s in expected_streams for site in sites for n in names}
    for values in gates.values():
        assert values.shape == (model.depth,) and values.abs().max() == 0


def test_a_frozen_model_has_no_gates():
    assert adapter_gates(model_and_head("none", "none")[0]) == {}


def test_the_recorder_follows_every_step_and_the_gates_move(splits):
    model, head = model_and_head()
    recorder = GateRecorder(model)
    fit(model, head, AVELTask(), *splits, CONFIG, on_step=recorder)
    steps = CONFIG.epochs * len(splits[0]) // CONFIG.batch_size
    assert len(recorder.steps) == len(recorder.losses) == steps
    assert recorder.steps[0] == (0, 0) and recorder.steps[-1] == (
        CONFIG.epochs - 1,
        len(splits[0]) // CONFIG.batch_size - 1,
    )
    g = recorder.trajectory(("audio", "attn", "g"))
    assert g.shape == (steps + 1, model.depth)
    assert g[0].abs().max() == 0 and g[-1].abs().min() > 0  # every block's gate left zero
    assert torch.equal(g[-1], adapter_gates(model)[("audio", "attn", "g")])
    with pytest.raises(KeyError, match="no gate"):
        recorder.trajectory(("audio", "mlp", "g"))


def test_predictions_give_the_loops_accuracy_and_the_confusion_matrix_counts_them(splits):
    model, head = model_and_head()
    val = splits[1]
    predictions, labels = predict_segments(model, head, val, batch_size=3)
    assert predictions.shape == labels.shape == (len(val), DATA.num_segments)
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy == pytest.approx(evaluate(model, head, AVELTask(), val, CONFIG)["accuracy"])

    matrix = confusion_matrix(predictions, labels, val.num_classes)
    assert matrix.shape == (val.num_classes, val.num_classes)
    assert matrix.sum() == labels.numel()
    assert matrix.diagonal().sum() == (predictions == labels).sum()
    assert torch.equal(matrix.sum(dim=1), torch.bincount(labels.flatten(), minlength=val.num_classes))


def test_the_confusion_matrix_puts_truth_in_rows():
    matrix = confusion_matrix(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 2]), 3)
    assert matrix.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)


def test_modality_controls_remove_exactly_one_modality(splits):
    val = splits[1]
    silent, blank, same = (ModalityControl(val, remove) for remove in ("silence", "blank", "none"))
    original = val[0]
    item = silent[0]
    assert torch.equal(item["frames"], original["frames"]) and torch.equal(item["labels"], original["labels"])
    assert torch.equal(item["audio"][3], silent_audio_image(DATA.fbank))
    assert not torch.equal(item["audio"], original["audio"])
    item = blank[0]
    assert item["frames"].abs().max() == 0 and torch.equal(item["audio"], original["audio"])
    assert all(torch.equal(same[0][k], original[k]) for k in ("frames", "audio", "labels"))
    assert len(silent) == len(val) and silent.num_classes == val.num_classes


def test_modality_control_errors_are_clear(splits):
    with pytest.raises(ValueError, match="remove must be one of"):
        ModalityControl(splits[1], "mute")
    with pytest.raises(ValueError, match="FbankConfig"):
        ModalityControl([{"audio": torch.zeros(1)}], "silence")


def test_accuracy_by_kind_splits_the_segments_by_their_ground_truth(splits):
    from avpet_core.analysis import accuracy_by_kind, segment_kinds
    from avpet_core.data.synthetic import EVENT

    val = splits[1]
    kinds = segment_kinds(val)
    labels = torch.stack([val[i]["labels"] for i in range(len(val))])
    assert kinds.shape == labels.shape
    assert torch.equal(kinds == EVENT, labels != val.background_index)  # an event is exactly a labelled segment
    always_background = torch.full_like(labels, val.background_index)
    by_kind = accuracy_by_kind(always_background, labels, kinds)
    assert by_kind["event"] == 0.0 and all(v == 1.0 for k, v in by_kind.items() if k != "event")
    with pytest.raises(ValueError, match="differ in shape"):
        accuracy_by_kind(always_background[:1], labels, kinds)
    with pytest.raises(ValueError, match="no ground-truth segment kinds"):
        segment_kinds([1, 2])


def test_modality_controls_rows_and_first_seed_predictions(splits):
    """One row per run and control; the intact accuracy of later seeds is the run's own test accuracy."""
    from avpet_core.analysis import modality_controls

    class Run:
        def __init__(self, model, head, accuracy):
            self.model, self.head, self.test = model, head, {"accuracy": accuracy}

    test_set = splits[1]
    model, head = model_and_head()
    results = {"row": {0: Run(model, head, 0.123), 1: Run(model, head, 0.456)}}
    accuracy, predictions = modality_controls(results, test_set, {"intact": "none", "silent": "silence"})
    assert set(accuracy) == {"row, intact", "row, silent"} and accuracy["row, intact"][1] == 0.456
    assert accuracy["row, silent"][0] == accuracy["row, silent"][1]  # the same model, evaluated twice
    assert set(predictions) == {("row", "intact"), ("row", "silent")}
