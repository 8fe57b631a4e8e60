"""The training loop: determinism, exact resume after an interruption, logs and checkpoints, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from avpet_core.checkpoints import load_trained
from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig
from avpet_core.heads import SegmentClassifier
from avpet_core.models import build_dual_stream
from avpet_core.tasks import AVELTask
from avpet_core.schedules import warmup_cosine
from avpet_core.train import TrainConfig, TrainingError, epoch_order, fit, lr_factor

DATA = SynthAVEConfig(num_videos=8, num_eval_videos=4)
CONFIG = TrainConfig(epochs=3, batch_size=4, model_lr=1e-2, head_lr=1e-2, progress=False, eval_batch_size=4)


@pytest.fixture(scope="module")
def splits():
    return SynthAVE(DATA, "train", cache="memory"), SynthAVE(DATA, "val", cache="memory")


def fresh(adapter_seed: int | None = None):
    """The same frozen (random) micro-ViT every time; adapters and head re-drawn if ``adapter_seed`` is given."""
    torch.manual_seed(0)
    model = build_dual_stream("micro_vit", "avpea", "both")  # the loop is tested, not the accuracy
    head = SegmentClassifier(model.embed_dim, DATA.num_classes + 1, hidden=32)
    if adapter_seed is not None:
        torch.manual_seed(adapter_seed)
        with torch.no_grad():
            for p in list(model.adapters.parameters()) + list(head.parameters()):
                p.normal_(0, 0.1)
    return model, head


def without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_a_run_is_a_function_of_its_seed_and_writes_its_files(tmp_path, splits):
    model, head = fresh()
    short = TrainConfig(**{**CONFIG.__dict__, "epochs": 2})
    first = fit(model, head, AVELTask(), *splits, short, tmp_path / "a", metadata={"experiment": "test"})
    again = fit(*fresh(), AVELTask(), *splits, short, tmp_path / "b")
    assert without_time(first.history) == without_time(again.history)
    assert [row["epoch"] for row in first.history] == [1, 2]
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]

    run = tmp_path / "a"
    assert {p.name for p in run.iterdir()} >= {
        "last.safetensors",
        "last.json",
        "best.safetensors",
        "best.json",
        "state.pt",
        "log.csv",
        "log.json",
    }
    assert without_time(json.loads((run / "log.json").read_text())) == without_time(first.history)
    assert (run / "log.csv").read_text().splitlines()[0].startswith("epoch,train_loss,val_accuracy")
    best = json.loads((run / "best.json").read_text())["metadata"]
    assert best["experiment"] == "test" and best["metrics"]["val_accuracy"] == first.best["val_accuracy"]

    reloaded, reloaded_head = fresh(adapter_seed=1)
    load_trained(run / "last", reloaded, reloaded_head)
    for a, b in zip(
        list(model.adapters.parameters()) + list(head.parameters()),
        list(reloaded.adapters.parameters()) + list(reloaded_head.parameters()),
    ):
        assert torch.equal(a.cpu(), b)


def test_only_adapters_and_head_change(splits):
    model, head = fresh()
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    gates = [a.h.item() for a in model.adapters["audio"].modules() if hasattr(a, "h")]
    fit(model, head, AVELTask(), *splits, TrainConfig(**{**CONFIG.__dict__, "epochs": 1}))
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone.items())
    assert gates == [0.0] * 4 and all(a.h.item() != 0.0 for a in model.adapters["audio"].modules() if hasattr(a, "h"))


def test_resume_after_an_interruption_ends_exactly_like_an_uninterrupted_run(tmp_path, splits):
    reference = fit(*fresh(), AVELTask(), *splits, CONFIG, tmp_path / "ref")

    def interrupt(epoch, step, loss):
        if epoch == 1 and step == 1:  # in the middle of the second epoch
            raise KeyboardInterrupt

    model, head = fresh()
    with pytest.raises(KeyboardInterrupt):
        fit(model, head, AVELTask(), *splits, CONFIG, tmp_path / "run", on_step=interrupt)
    assert len(json.loads((tmp_path / "run" / "log.json").read_text())) == 1  # epoch 1 was kept

    model, head = fresh(adapter_seed=7)  # a new process: other adapter and head weights, which resume replaces
    resumed = fit(model, head, AVELTask(), *splits, CONFIG, tmp_path / "run", resume=True)
    assert without_time(resumed.history) == without_time(reference.history)
    assert without_time([resumed.best]) == without_time([reference.best])


def test_schedule_and_order():
    total = 100
    factors = [lr_factor(step, total, 0.1) for step in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] < 0.01
    assert epoch_order(10, 0, 0) == epoch_order(10, 0, 0) != epoch_order(10, 0, 1)
    assert sorted(epoch_order(10, 3, 2)) == list(range(10))


def test_the_loop_schedule_is_warmup_then_cosine():
    """lr_factor is the loop's shape of :func:`avpet_core.schedules.warmup_cosine` (cosine after the
    warm-up), its warm-up a fraction of the steps; the schedule's arithmetic is tested in test_schedules.py."""
    for total in (1, 40, 2400):
        for fraction in (0.0, 0.1, 0.25):
            warmup = max(1, int(round(total * fraction)))
            assert [lr_factor(s, total, fraction) for s in range(total + 2)] == [
                warmup_cosine(s, total, warmup) for s in range(total + 2)
            ]


def test_clear_errors(tmp_path, splits):
    model, head = fresh()
    with pytest.raises(TrainingError, match="nothing to resume from"):
        fit(model, head, AVELTask(), *splits, CONFIG, tmp_path / "empty", resume=True)
    with pytest.raises(TrainingError, match="needs a run directory"):
        fit(model, head, AVELTask(), *splits, CONFIG, None, resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA device"):
            fit(model, head, AVELTask(), *splits, TrainConfig(device="cuda"))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "state.pt").write_bytes(b"not a state")
    with pytest.raises(TrainingError, match=r"state\.pt: cannot read the training state"):
        fit(model, head, AVELTask(), *splits, CONFIG, tmp_path / "torn", resume=True)


def run_worker(tmp_path, processes: int) -> dict:
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / f"result-{processes}.json"
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, str(worker), str(out)]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(worker),
            str(out),
        ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """DDP (gloo, CPU): each process takes half of every global batch and gradients are averaged.

    Tolerance: the two runs sum the same gradients in a different order. Measured here after four
    AdamW steps: weights within 7e-7, losses within 1e-7, equal accuracies; the test allows 1e-4.
    """
    single, double = run_worker(tmp_path, 1), run_worker(tmp_path, 2)
    assert single["world"] == 1 and double["world"] == 2
    for a, b in zip(single["history"], double["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["val_accuracy"] == b["val_accuracy"]
    difference = (torch.tensor(single["weights"]) - torch.tensor(double["weights"])).abs().max().item()
    assert difference < 1e-4


# -- AVQA -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def avqa_splits():
    """SynthAVQA with three training scenes (about a dozen questions) and two validation scenes, four segments each."""
    from avpet_core.data.synthetic import SynthAVQA, SynthAVQAConfig

    config = SynthAVQAConfig(num_scenes=3, num_eval_scenes=2, num_segments=4)
    train = SynthAVQA(config, "train", keep_videos=None)
    return train, SynthAVQA(config, "val", vocab=train.vocab, keep_videos=None)


def test_avqa_metrics_are_table_2s_columns_with_csv_friendly_keys():
    from avpet_core.tasks.avqa import AVQA_METRIC_KEYS, AVQATask

    # types: 0 = Audio/Counting, 2 = Visual/Counting, 3 = Visual/Location, 4 = Audio-Visual/Existential
    batches = [
        {"answer": torch.tensor([1, 2, 3]), "type": torch.tensor([0, 0, 2])},
        {"answer": torch.tensor([4, 5, 6]), "type": torch.tensor([3, 4, 4])},
    ]
    predictions = torch.tensor([1, 0, 3, 4, 5, 0])  # right: A/Count 1 of 2, V/Count 1/1, V/Loc 1/1, AV/Exist 1/2
    metrics = AVQATask().metrics(predictions, batches)
    assert list(metrics) == list(AVQA_METRIC_KEYS.values())
    assert all(key.replace("_", "").isalnum() and key.islower() for key in metrics)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["audio_counting"] == 0.5 and metrics["visual_counting"] == 1.0 and metrics["visual_location"] == 1.0
    assert metrics["audio_visual_existential"] == 0.5
    assert metrics["audio"] == 0.5 and metrics["visual"] == 1.0 and metrics["audio_visual"] == 0.5
    assert metrics["group_mean"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)  # the paper's "Avg"
    assert metrics["audio_comparative"] is None and metrics["audio_visual_temporal"] is None  # no such questions
    without_audio_visual = AVQATask().metrics(
        torch.tensor([1]), [{"answer": torch.tensor([1]), "type": torch.tensor([0])}]
    )
    assert without_audio_visual["group_mean"] is None


def test_majority_answer_baselines_read_only_the_answers(avqa_splits):
    from avpet_core.tasks.avqa import majority_answer_metrics

    train, val = avqa_splits
    overall = majority_answer_metrics(train, val)
    per_type = majority_answer_metrics(train, val, per_type=True)
    most = max(set(train.answer_ids), key=lambda a: (train.answer_ids.count(a), -a))
    assert overall["accuracy"] == pytest.approx(sum(a == most for a in val.answer_ids) / len(val))
    train_prior = majority_answer_metrics(train, train, per_type=True)
    assert (
        train_prior["accuracy"] >= majority_answer_metrics(train, train)["accuracy"]
    )  # on its own data it cannot lose
    assert set(per_type) == set(overall)


def test_the_loop_trains_avqa_and_logs_every_column(tmp_path, avqa_splits):
    from avpet_core.heads import AVQAHeadConfig, AVSTHead
    from avpet_core.tasks.avqa import AVQA_METRIC_KEYS, AVQATask

    train, val = avqa_splits

    def fresh_avqa():
        torch.manual_seed(0)
        model = build_dual_stream("micro_vit", "avpea", "both")
        head = AVSTHead(
            model.embed_dim, len(train.question_vocab), train.num_answers, AVQAHeadConfig(hidden=16, word_dim=16)
        )
        return model, head

    # One thread: batches this small gain nothing from a second, and a busy machine makes two slow.
    config = TrainConfig(
        epochs=2, batch_size=4, model_lr=1e-2, head_lr=1e-2, progress=False, eval_batch_size=8, num_threads=1
    )
    first = fit(*fresh_avqa(), AVQATask(), train, val, config, tmp_path / "a")
    again = fit(*fresh_avqa(), AVQATask(), train, val, config, tmp_path / "b")
    assert without_time(first.history) == without_time(again.history)  # deterministic on CPU
    header = (tmp_path / "a" / "log.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "train_loss", *(f"val_{k}" for k in AVQA_METRIC_KEYS.values()), "seconds"]
    assert first.best["val_accuracy"] == max(row["val_accuracy"] for row in first.history)
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]
