"""Contract tests over every registered task and head, in one table, and a task that is not classification.

Every head of :data:`avpet_core.heads.HEADS` is built for its task on a tiny batch of that task's
data and must: run forward, give a finite scalar loss whose gradient reaches every trainable
parameter of the head, predict something the task's metrics read, and produce the task's
``metric``. A head added without a row in :data:`HEAD_CASES` fails :func:`test_every_head_has_a_case`.

The toy retrieval task at the end (recall@1 of the audio clip among a batch's videos) is one task
class, one head class and registry lines: it trains and is evaluated through ``run_experiment``,
``avpet train``'s row and ``format_table`` with no code of its own in ``experiments``, ``cli``,
``train`` or ``evaluation``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate

from avpet_core import experiments
from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig, SynthAVQAConfig
from avpet_core.experiments import MODELS, Experiment, RunSettings, format_table, run_experiment
from avpet_core.heads import HEADS, HeadEntry, HeadError, build_head
from avpet_core.models.shared_lowrank import SharedMultimodalTransformer, SharedTransformerConfig
from avpet_core.models.stems import StemConfig
from avpet_core.profiles import OFFLINE
from avpet_core.tasks import TASKS, DataRequest, Task, get_task
from avpet_core.data import load_videos
from avpet_core.train import TrainConfig

TINY_AVE = SynthAVEConfig(num_videos=4, num_eval_videos=2, num_test_videos=2)
TINY_AVQA = SynthAVQAConfig(num_scenes=1, num_eval_scenes=1, num_test_scenes=1, num_segments=4)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@dataclass(frozen=True)
class HeadCase:
    """How to build a tiny batch and the model a head reads: the data config and a model kind."""

    data: object
    model: str  # a key of experiments.MODELS, or "shared-lowrank"
    adapter: str = "avpea"


HEAD_CASES: dict[str, HeadCase] = {
    "cmbs": HeadCase(TINY_AVE, "dual-stream"),
    "segment": HeadCase(TINY_AVE, "dual-stream"),
    "avst": HeadCase(TINY_AVQA, "dual-stream"),
    "trimodal": HeadCase(TINY_AVQA, "trimodal", adapter="lstta"),
    "video": HeadCase(TINY_AVE, "shared-lowrank"),
}
TINY_SHARED = SharedTransformerConfig(
    dim=16, depth=1, heads=2, ffn_dim=32, rank=4, stems=StemConfig(visual_channels=(4, 8), audio_channels=(4, 8))
)


def test_every_head_has_a_case():
    assert set(HEAD_CASES) == set(HEADS)


def test_the_pretraining_task_trains_its_own_head():
    """The one task without a registered head: its head runs the encoder itself and only trains."""
    from avpet_core.tasks.multimodal_pretraining import PretrainHeads

    task, train = get_task("multimodal-pretraining"), load_videos(TINY_AVE, "train", count=4)
    torch.manual_seed(0)
    model, heads = SharedMultimodalTransformer(TINY_SHARED), PretrainHeads(TINY_SHARED.dim)
    batch = default_collate([train[i] for i in range(4)])
    loss = heads.loss(heads(task.features(model, batch), batch), batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and task.metric in heads.history
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(TypeError, match="no predictions"):
        heads.predict(None)


def test_every_task_with_a_head_is_registered():
    assert {entry.task for entry in HEADS.values()} <= set(TASKS)
    for name, task_class in TASKS.items():
        task = task_class()
        assert task.name == name and task.metric, name


def _model_and_data(name: str):
    case, task = HEAD_CASES[name], get_task(HEADS[name].task)
    if case.model == "shared-lowrank":
        train = load_videos(case.data, "train", count=4)
        torch.manual_seed(0)
        return SharedMultimodalTransformer(TINY_SHARED), 2 * TINY_SHARED.dim, train, task
    splits = task.datasets(DataRequest(name, case.data, "synth", None, OFFLINE))
    settings = RunSettings(pretrained=False)
    torch.manual_seed(0)
    model = MODELS[case.model](settings, case.adapter, "both")
    return model, model.feature_dims, splits[0], task


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_contract(name):
    model, dims, train, task = _model_and_data(name)
    head = build_head(name, task.name, dims, task.head_sizes(train), hidden=16)
    batch = default_collate([train[i] for i in range(2)])
    output = head(task.features(model, batch), batch)
    loss = head.loss(output, batch)
    assert loss.ndim == 0 and torch.isfinite(loss), name
    loss.backward()
    trained = [p for p in head.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained), name
    with torch.no_grad():
        predictions = head.predict(head(task.features(model, batch), batch))
    kept = {k: v for k, v in batch.items() if k not in task.inputs}
    metrics = task.metrics(predictions, [kept])
    assert task.metric in metrics and 0.0 <= metrics[task.metric] <= 1.0, (name, metrics)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_check_their_sizes(name):
    dims = {"visual": 16, "audio": 16, "text": 16} if name == "trimodal" else 16
    with pytest.raises(HeadError, match=f"head {name!r} needs the sizes"):
        build_head(name, HEADS[name].task, dims, {}, hidden=16)
    sizes = {key: 0 for key in HEADS[name].sizes}
    with pytest.raises(HeadError, match="positive integers"):
        build_head(name, HEADS[name].task, dims, sizes, hidden=16)


# -- a task whose metric is not accuracy ---------------------------------------------------------------


class PairedClips(Dataset):
    """SynthAVE videos as (frames, audio) pairs: the retrieval target of video ``i`` is its own audio."""

    def __init__(self, config: SynthAVEConfig, split: str):
        self.videos = SynthAVE(config, split, cache="memory")

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        item = self.videos[index]
        return {"frames": item["frames"], "audio": item["audio"], "index": torch.tensor(index)}


class ToyRetrievalTask(Task):
    """Audio-to-video retrieval: metric recall@1 over the whole split (not accuracy)."""

    name = "toy-retrieval"
    metric = "recall_at_1"
    synthetic = "SynthAVE pairs"
    data_kinds = ("synth",)

    def datasets(self, request: DataRequest):
        return tuple(PairedClips(request.config, split) for split in ("train", "val", "test"))

    def head_sizes(self, train_set) -> dict[str, int]:
        return {"embedding_dim": 8}

    def metrics(self, predictions, batches: list[dict]) -> dict:
        visual, audio = predictions[:, 0], predictions[:, 1]  # (N, 2, E): one embedding per modality
        similarity = F.normalize(audio, dim=-1) @ F.normalize(visual, dim=-1).T
        hits = similarity.argmax(dim=1) == torch.arange(len(similarity))
        return {"recall_at_1": hits.float().mean().item(), "candidates": len(similarity)}


class ToyRetrievalHead(nn.Module):
    """Both streams' CLS tokens projected to a shared space; symmetric InfoNCE over the batch."""

    def __init__(self, dim: int, embedding_dim: int):
        super().__init__()
        self.visual, self.audio = nn.Linear(dim, embedding_dim), nn.Linear(dim, embedding_dim)

    def forward(self, features, batch: Mapping) -> torch.Tensor:
        visual = self.visual(features.visual_tokens[:, :, 0].mean(1))
        audio = self.audio(features.audio_tokens[:, :, 0].mean(1))
        return torch.stack([visual, audio], dim=1)

    def loss(self, output: torch.Tensor, batch: Mapping) -> torch.Tensor:
        logits = F.normalize(output[:, 1], dim=-1) @ F.normalize(output[:, 0], dim=-1).T / 0.1
        target = torch.arange(len(logits))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output


def build_toy_retrieval_head(dim: int, sizes: Mapping[str, int], hidden: int | None = None) -> ToyRetrievalHead:
    return ToyRetrievalHead(dim, sizes["embedding_dim"])


@pytest.fixture
def toy_retrieval(monkeypatch):
    """The registry lines: one task, one head, one experiment."""
    monkeypatch.setitem(TASKS, ToyRetrievalTask.name, ToyRetrievalTask)
    monkeypatch.setitem(
        HEADS, "toy-retrieval", HeadEntry("toy-retrieval", build_toy_retrieval_head, sizes=("embedding_dim",))
    )
    experiment = Experiment(
        "toy/retrieval",
        "avpea",
        "both",
        "toy-retrieval",
        None,
        "none (a test task)",
        task="toy-retrieval",
        data=TINY_AVE,
        label="toy retrieval, AV-PEA",
        training=TrainConfig(epochs=2, batch_size=2, model_lr=1e-3, head_lr=1e-3),
    )
    monkeypatch.setitem(experiments.EXPERIMENTS, experiment.name, experiment)
    return experiment


def test_a_retrieval_task_runs_through_the_experiments(toy_retrieval, tmp_path):
    result = run_experiment("toy/retrieval", RunSettings(pretrained=False), tmp_path / "run")
    assert set(result.test) == {"recall_at_1", "candidates"} and result.test["candidates"] == 2
    assert [set(epoch) >= {"val_recall_at_1", "train_loss"} for epoch in result.fit.history] == [True, True]
    row = result.row()
    assert row["metric"] == "recall_at_1" and "test_accuracy" not in row
    assert row["test_recall_at_1"] == result.test["recall_at_1"]
    assert row["best_val_recall_at_1"] == result.fit.best["val_recall_at_1"]
    assert result.adapter > 0 and result.trainable > result.adapter
    table = format_table([result])
    assert "test recall_at_1 (ours)" in table and "toy retrieval, AV-PEA" in table
    assert math.isfinite(row["history"][-1]["train_loss"])


def test_a_retrieval_task_trains_from_the_command_line(toy_retrieval, capsys):
    from avpet_core import cli

    assert cli.main(["train", "--experiment", "toy/retrieval", "--random-weights", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "val recall_at_1" in out and "test recall_at_1" in out


def test_predictions_of_several_lengths_come_back_per_item():
    from avpet_core.evaluation import gather_predictions

    same = gather_predictions([torch.zeros(2, 3), torch.ones(1, 3)])
    assert same.shape == (3, 3)
    ragged = gather_predictions([torch.zeros(2, 3), torch.ones(1, 5)])
    assert [tuple(r.shape) for r in ragged] == [(3,), (3,), (5,)]
    assert gather_predictions([["a cat"], ["a dog", "a drum"]]) == ["a cat", "a dog", "a drum"]


def test_data_configs_of_another_task_fail_clearly():
    request = DataRequest("table4/both", TINY_AVQA, "synth", None, OFFLINE)
    with pytest.raises(ValueError, match="table4/both: an AVEL experiment needs SynthAVEConfig data"):
        get_task("avel").datasets(request)
    with pytest.raises(ValueError, match="needs SynthAVQAConfig"):
        get_task("avqa").datasets(replace(request, config=TINY_AVE))
