"""Named experiments: one config per row of the tables the book reproduces.

This module is the single source of the experiment settings; ``avpet train --experiment NAME``,
``avpet reproduce TABLE`` and the notebooks all read it. Every row carries the paper's number for
that row, so printed tables can put ours beside it — labelled with the backbone, data and device
that produced ours.

Two ways to run a row (see the design of the book):

* offline default — the micro-ViT pretrained in the repository, SynthAVE, CPU. The learning rates
  are ten times AV-PEA's 3e-4 because the offline runs take a few dozen optimiser steps, not
  thousands;
* the paper's setting — ``backbone="vit_base_patch16_224.augreg_in21k", pretrained=True,
  data="ave", data_root=DIR, device="cuda"``; the learning rates then go back to the paper's.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from avpet_core.backbones import MICRO_VIT
from avpet_core.checkpoints import load_adapters
from avpet_core.data.synthetic import SYNTH_AVE_VITB, SynthAVE, SynthAVEConfig
from avpet_core.heads import CMBSHead, CMBSHeadConfig, SegmentClassifier
from avpet_core.models import build_dual_stream
from avpet_core.train import AVELTask, FitResult, TrainConfig, distributed_context, evaluate, fit

OFFLINE_DATA = SynthAVEConfig(num_videos=160, num_eval_videos=80)
"""SynthAVE as the offline AVEL runs use it: 160 training videos, 80 each for validation and test."""

OFFLINE_TRAINING = TrainConfig(epochs=3, batch_size=16, adapter_lr=3e-3, head_lr=3e-3)
PAPER_TRAINING = TrainConfig(epochs=15, batch_size=16, adapter_lr=3e-4, head_lr=3e-4, device="cuda")


class ExperimentError(ValueError):
    """An experiment name or setting that does not exist."""


@dataclass(frozen=True)
class Experiment:
    """One row of a reproduced table.

    Attributes:
        name: ``"table4/both"``, ...
        adapter: adapter method (``"none"`` for the frozen backbone with its head only).
        streams: which streams carry adapters.
        head: ``"cmbs"`` (the head of AV-PEA's Tables 1 and 4) or ``"segment"`` (LAVISH's).
        paper: the paper's number for this row (per-segment accuracy on AVE, in %).
        paper_setting: what the paper's number was measured with.
    """

    name: str
    adapter: str
    streams: str
    head: str
    paper: float | None
    paper_setting: str
    task: str = "avel"
    data: SynthAVEConfig = OFFLINE_DATA
    training: TrainConfig = OFFLINE_TRAINING
    head_hidden: int = 64
    label: str = ""


_T4 = "AVE, ViT-B/16 (ImageNet-21k), CMBS head (AV-PEA Table 4)"
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("table4/none", "none", "both", "cmbs", 72.01, _T4, label="CMBS, frozen ViT, no adapter"),
        Experiment("table4/audio", "avpea", "audio", "cmbs", 72.71, _T4, label="+ AV-PEA in the audio stream"),
        Experiment("table4/visual", "avpea", "visual", "cmbs", 74.68, _T4, label="+ AV-PEA in the visual stream"),
        Experiment("table4/both", "avpea", "both", "cmbs", 75.65, _T4, label="+ AV-PEA in both streams"),
        Experiment("table1/avpea", "avpea", "both", "cmbs", 75.65, "AVE, ViT-B/16, CMBS head (AV-PEA Table 1)", label="CMBS + AV-PEA"),
        Experiment("table1/lavish", "lavish", "both", "segment", 75.30, "AVE, ViT-B/16, LAVISH's own head (AV-PEA Table 1)", label="LAVISH"),
    )
}
TABLES: dict[str, tuple[str, ...]] = {
    "table4": ("table4/none", "table4/audio", "table4/visual", "table4/both"),
    "table1": ("table1/lavish", "table1/avpea"),
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ExperimentError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


@dataclass(frozen=True)
class RunSettings:
    """Where and on what an experiment runs (the offline default, or the paper's setting)."""

    backbone: str = MICRO_VIT
    pretrained: bool = True
    weights_file: str | None = None
    data: str = "synth"
    data_root: str | None = None
    device: str = "cpu"
    epochs: int | None = None
    seed: int = 0
    progress: bool = False

    def describe(self) -> str:
        data = "SynthAVE" if self.data == "synth" else f"{self.data} ({self.data_root})"
        return f"{self.backbone}{'' if self.pretrained or self.weights_file else ' (random weights)'}, {data}, {self.device}"


@dataclass
class ExperimentResult:
    experiment: Experiment
    settings: RunSettings
    fit: FitResult
    test: dict = field(default_factory=dict)
    trainable: int = 0
    adapter: int = 0

    def row(self) -> dict:
        """The row as JSON-ready values (``test_accuracy`` is ``None`` on ranks other than 0)."""
        return {
            "name": self.experiment.name,
            "label": self.experiment.label,
            "test_accuracy": self.test.get("accuracy"),
            "best_val_accuracy": self.fit.best.get("val_accuracy"),
            "paper": self.experiment.paper,
            "paper_setting": self.experiment.paper_setting,
            "ours_setting": self.settings.describe(),
            "adapter_parameters": self.adapter,
            "trainable_parameters": self.trainable,
            "history": self.fit.history,
        }


def datasets(experiment: Experiment, settings: RunSettings):
    """``(train, val, test)`` for the experiment under the settings."""
    if settings.data == "synth":
        config = experiment.data if settings.backbone == MICRO_VIT else replace(
            experiment.data, image_size=SYNTH_AVE_VITB.image_size, fbank=SYNTH_AVE_VITB.fbank)
        return tuple(SynthAVE(config, split, cache="memory") for split in ("train", "val", "test"))
    if settings.data == "ave":
        from avpet_core.data.ave import AVE, AVE_MICRO, AVEMediaConfig

        if settings.data_root is None:
            raise ExperimentError("data 'ave' needs --data-root, the AVE directory with Annotations.txt")
        media = AVE_MICRO if settings.backbone == MICRO_VIT else AVEMediaConfig()
        return tuple(AVE(settings.data_root, split, media=media) for split in ("train", "val", "test"))
    raise ExperimentError(f"unknown data {settings.data!r} for an AVEL experiment; choose 'synth' or 'ave'")


def build(experiment: Experiment, settings: RunSettings, num_classes: int):
    """The dual-stream model and the head of an experiment (seeded)."""
    torch.manual_seed(settings.seed)
    model = build_dual_stream(settings.backbone, experiment.adapter, experiment.streams,
                              pretrained=settings.pretrained, weights_file=settings.weights_file)
    if experiment.head == "cmbs":
        head = CMBSHead(model.embed_dim, num_classes, CMBSHeadConfig(hidden=experiment.head_hidden))
    elif experiment.head == "segment":
        head = SegmentClassifier(model.embed_dim, num_classes)
    else:
        raise ExperimentError(f"unknown head {experiment.head!r}")
    return model, head


def run_experiment(
    experiment: Experiment | str,
    settings: RunSettings = RunSettings(),
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    splits: tuple | None = None,
) -> ExperimentResult:
    """Train one row and evaluate its best epoch on the test split.

    ``splits`` — ``(train, val, test)`` already built by :func:`datasets` for this experiment and
    settings — lets the rows of a table share their data instead of generating it again.
    """
    from avpet_core.params import count_adapted

    experiment = get_experiment(experiment) if isinstance(experiment, str) else experiment
    if resume and run_dir is None:
        raise ExperimentError("resuming needs the run directory of the run (--run-dir)")
    train_set, val_set, test_set = splits if splits is not None else datasets(experiment, settings)
    model, head = build(experiment, settings, train_set.num_classes)
    base = experiment.training if settings.device == "cpu" else replace(PAPER_TRAINING, epochs=experiment.training.epochs)
    training = replace(base, device=settings.device, seed=settings.seed, progress=settings.progress,
                       epochs=settings.epochs or base.epochs)
    with tempfile.TemporaryDirectory(prefix="avpet-run-") as scratch:
        directory = Path(run_dir) if run_dir is not None else Path(scratch)
        result = fit(model, head, AVELTask(), train_set, val_set, training, directory, resume=resume,
                     metadata={"experiment": experiment.name, "settings": settings.__dict__})
        if distributed_context()[0] != 0:  # under torchrun only rank 0 wrote the checkpoints and reports
            return ExperimentResult(experiment, settings, result)
        load_adapters(directory / "best", model, head)
    test = evaluate(model, head, AVELTask(), test_set, training)
    counts = count_adapted(model, head)
    return ExperimentResult(experiment, settings, result, test, trainable=counts.trainable, adapter=counts.adapter)


def reproduce(table: str, settings: RunSettings = RunSettings()) -> list[ExperimentResult]:
    """Run every row of ``table`` (``"table4"``, ``"table1"``) with the same settings."""
    if table not in TABLES:
        raise ExperimentError(f"unknown table {table!r}; choose one of {sorted(TABLES)}")
    results, shared = [], {}
    for name in TABLES[table]:
        experiment = get_experiment(name)
        if experiment.data not in shared:  # rows with the same data reuse its (memory-cached) splits
            shared[experiment.data] = datasets(experiment, settings)
        results.append(run_experiment(experiment, settings, splits=shared[experiment.data]))
    return results


def format_table(results: list[ExperimentResult]) -> str:
    """Ours beside the paper's, labelled with where each came from."""
    lines = [f"ours: {results[0].settings.describe()}  |  paper: {results[0].experiment.paper_setting}",
             f"{'row':34} {'adapter':>9} {'test acc (ours)':>16} {'paper':>7}"]
    for r in results:
        ours = f"{100 * r.test['accuracy']:.1f}%"
        paper = f"{r.experiment.paper:.2f}%" if r.experiment.paper is not None else "-"
        lines.append(f"{r.experiment.label:34} {r.adapter / 1e6:8.3f}M {ours:>16} {paper:>7}")
    return "\n".join(lines)
