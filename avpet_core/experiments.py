"""Named experiments: one config per row of the tables the book reproduces.

This module is the single source of the experiment settings; ``avpet train --experiment NAME``,
``avpet reproduce TABLE`` and the notebooks all read it. Every row carries the paper's number for
that row, so printed tables can put ours beside it — labelled with the backbone, data and device
that produced ours.

Two ways to run a row (see the design of the book):

* offline default — the micro-ViT pretrained in the repository, SynthAVE (or SynthAVQA), CPU. The
  learning rates are 10-30 times AV-PEA's 3e-4 because the offline runs take about a hundred
  optimiser steps, not thousands;
* the paper's setting — ``backbone="vit_base_patch16_224.augreg_in21k", pretrained=True,
  data="ave"`` (or ``"music-avqa"``) ``, data_root=DIR, device="cuda"``; the learning rates then go
  back to the paper's.

An experiment's ``task`` chooses everything task-specific through :data:`TASKS`: the loop's task
(:class:`~avpet_core.train.AVELTask`, :class:`~avpet_core.train.AVQATask`), the data it reads,
the heads it may use, the extra columns of its JSON row and the layout of its printed table.
Tables 1 and 4 are AVEL on AVE (``task="avel"``); Table 2 is AVQA on MUSIC-AVQA (``task="avqa"``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from avpet_core.adapters import LAVISH_AVQA, AdapterConfig
from avpet_core.backbones import MICRO_VIT
from avpet_core.checkpoints import load_adapters
from avpet_core.data.synthetic import (
    NUM_SEGMENTS,
    SYNTH_AVE_VITB,
    SYNTH_FBANK_MICRO,
    SynthAVE,
    SynthAVEConfig,
    SynthAVQA,
    SynthAVQAConfig,
)
from avpet_core.heads import AVQAHeadConfig, AVSTHead, CMBSHead, CMBSHeadConfig, SegmentClassifier
from avpet_core.models import build_dual_stream
from avpet_core.train import (
    AVELTask,
    AVQATask,
    FitResult,
    TrainConfig,
    distributed_context,
    evaluate,
    fit,
    majority_answer_metrics,
)

OFFLINE_DATA = SynthAVEConfig(num_videos=160, num_eval_videos=80, num_test_videos=400)
"""SynthAVE as the offline AVEL runs use it: 160 training videos, 80 for validation (evaluated every
epoch) and 400 for test (4,000 segments, evaluated once a run: its binomial standard error, about
0.7 points, is well below the differences between Table 4's rows)."""

OFFLINE_TRAINING = TrainConfig(epochs=10, batch_size=8, adapter_lr=1e-2, head_lr=1e-2)
"""The offline AVEL runs: 10 epochs of 20 steps (batch 8). With 5 epochs (100 steps) the validation
accuracy of most runs sat at the background share for three epochs and was still rising at the
last, so a row's number said more about when its run left that plateau than about the row
(measured, seeds 0-2 and 10-12: paired gains of -5 to +10 points between seeds); one frozen-row
run trained for 12 epochs went from 65.6% (5 epochs) to 74.9% test accuracy, its validation
accuracy flat from epoch 10 (0.741, 0.740, 0.746). Measured earlier on SynthAVE: batches of 16
and 3 epochs gave the adapters 30 optimiser steps, too few to move them; the learning rate is
raised to make up for a run that is still far shorter than the paper's."""
PAPER_TRAINING = TrainConfig(epochs=15, batch_size=16, adapter_lr=3e-4, head_lr=3e-4, device="cuda")

OFFLINE_AVQA_FBANK = replace(SYNTH_FBANK_MICRO, frame_shift_ms=20.0, target_frames=48)
"""The offline AVQA rows' audio: SynthAVQA's 64 mel bins with a 20 ms hop, 48 frames a second (8 x 6 tokens)."""

OFFLINE_AVQA_DATA = SynthAVQAConfig(num_scenes=160, num_eval_scenes=50, num_test_scenes=200, num_segments=5,
                                    fbank=OFFLINE_AVQA_FBANK)
"""SynthAVQA as the offline AVQA rows (Table 2) use it: 160 training scenes (four questions each,
640 questions), 50 for validation (200 questions, evaluated every epoch) and 200 for test (800
questions, evaluated once a run: its binomial standard error, about 1.7 points near 40 %, is
half the 3.5 of 200 test questions). Five one-second segments instead of ten and a
20 ms filterbank hop, which together cut the tokens per video to a third. With a paper backbone
the data goes back to ten segments at ViT-B/16's sizes."""

OFFLINE_AVQA_TRAINING = TrainConfig(epochs=2, batch_size=8, adapter_lr=3e-3, head_lr=3e-3)
"""The offline AVQA rows' optimisation: two epochs of 80 steps (batch 8), AdamW at 3e-3. The
budget is chapter 7's, which trains the three rows with three seeds each on one CPU core in six
to eight minutes: one run of LAVISH's AVQA preset (64 latents) takes 60-90 s of CPU, about twice
AV-PEA's and three times the frozen row's, and the earlier three epochs over 200 scenes (300
steps) would take about 1.7 times as long. At 160 steps every row is still at the type prior
(the chapter's learning curves)."""


class ExperimentError(ValueError):
    """An experiment name or setting that does not exist."""


@dataclass(frozen=True)
class Experiment:
    """One row of a reproduced table.

    Attributes:
        name: ``"table4/both"``, ...
        adapter: adapter method (``"none"`` for the frozen backbone with its head only).
        streams: which streams carry adapters.
        head: ``"cmbs"`` (the head of AV-PEA's Tables 1 and 4) or ``"segment"`` (LAVISH's) for
            AVEL; ``"avst"`` (MUSIC-AVQA's AVST, the head of Table 2) for AVQA.
        paper: the paper's headline number for this row, in % (AVE: per-segment accuracy;
            MUSIC-AVQA: the "Avg" column, the mean of the three group accuracies).
        paper_setting: what the paper's number was measured with.
        task: ``"avel"`` or ``"avqa"`` (a key of :data:`TASKS`).
        data: the offline synthetic data (a :class:`SynthAVEConfig` for AVEL, a
            :class:`SynthAVQAConfig` for AVQA).
        adapter_config: the adapter's settings when they differ from the method's defaults
            (LAVISH's AVQA preset: ``T = 64`` latents, 4 groups, no BatchNorm).
        paper_columns: the paper's other columns for this row, keyed like the task's metrics
            (Table 2: ``"audio"``, ``"visual"``, ``"audio_visual"``, ``"group_mean"``), in %.
        paper_parameters_m: the paper's ``(adapter, trainable)`` parameter counts, in millions.
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
    adapter_config: AdapterConfig | None = None
    paper_columns: tuple[tuple[str, float], ...] = ()
    paper_parameters_m: tuple[float, float] | None = None


_T4 = "AVE, ViT-B/16 (ImageNet-21k), CMBS head (AV-PEA Table 4)"
_T2 = "MUSIC-AVQA, ViT-B/16 (ImageNet-21k), AVST head (AV-PEA Table 2)"
_AVQA = dict(task="avqa", data=OFFLINE_AVQA_DATA, training=OFFLINE_AVQA_TRAINING)
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("table4/none", "none", "both", "cmbs", 72.01, _T4, label="CMBS, frozen ViT, no adapter"),
        Experiment("table4/audio", "avpea", "audio", "cmbs", 72.71, _T4, label="+ AV-PEA in the audio stream"),
        Experiment("table4/visual", "avpea", "visual", "cmbs", 74.68, _T4, label="+ AV-PEA in the visual stream"),
        Experiment("table4/both", "avpea", "both", "cmbs", 75.65, _T4, label="+ AV-PEA in both streams"),
        Experiment("table1/avpea", "avpea", "both", "cmbs", 75.65, "AVE, ViT-B/16, CMBS head (AV-PEA Table 1)", label="CMBS + AV-PEA"),
        Experiment("table1/lavish", "lavish", "both", "segment", 75.30, "AVE, ViT-B/16, LAVISH's own head (AV-PEA Table 1)", label="LAVISH"),
        # AV-PEA Table 2 (ViT-B/16 rows). Its "Avg" is the mean of the Audio, Visual and
        # Audio-Visual accuracies. The paper has no row without adapters.
        Experiment("table2/none", "none", "both", "avst", None, _T2, label="AVST, frozen ViT, no adapter", **_AVQA),
        Experiment("table2/lavish", "lavish", "both", "avst", 68.93, _T2, label="AVST + LAVISH (AVQA preset)",
                   adapter_config=LAVISH_AVQA, paper_parameters_m=(4.4, 13.1),
                   paper_columns=(("audio", 73.14), ("visual", 68.73), ("audio_visual", 64.93), ("group_mean", 68.93)), **_AVQA),
        Experiment("table2/avpea", "avpea", "both", "avst", 74.90, _T2, label="AVST + AV-PEA",
                   paper_parameters_m=(3.7, 12.4),
                   paper_columns=(("audio", 76.16), ("visual", 78.82), ("audio_visual", 69.72), ("group_mean", 74.90)), **_AVQA),
    )
}
TABLES: dict[str, tuple[str, ...]] = {
    "table4": ("table4/none", "table4/audio", "table4/visual", "table4/both"),
    "table1": ("table1/lavish", "table1/avpea"),
    "table2": ("table2/none", "table2/lavish", "table2/avpea"),
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

    def describe(self, task: str = "avel") -> str:
        data = TASKS[task].synthetic if self.data == "synth" else f"{self.data} ({self.data_root})"
        return f"{self.backbone}{'' if self.pretrained or self.weights_file else ' (random weights)'}, {data}, {self.device}"


@dataclass
class ExperimentResult:
    experiment: Experiment
    settings: RunSettings
    fit: FitResult
    test: dict = field(default_factory=dict)
    trainable: int = 0
    adapter: int = 0
    baselines: dict = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model, best epoch loaded
    head: nn.Module | None = field(default=None, repr=False)
    observer: Callable | None = field(default=None, repr=False)  # what ``run_experiment(observer=...)`` made

    def row(self) -> dict:
        """The row as JSON-ready values (``test_accuracy`` is ``None`` on ranks other than 0).

        The task adds its own columns (:attr:`TaskSpec.row_extras`); AVEL adds none.
        """
        return {
            "name": self.experiment.name,
            "label": self.experiment.label,
            "test_accuracy": self.test.get("accuracy"),
            "best_val_accuracy": self.fit.best.get("val_accuracy"),
            "paper": self.experiment.paper,
            "paper_setting": self.experiment.paper_setting,
            "ours_setting": self.settings.describe(self.experiment.task),
            "adapter_parameters": self.adapter,
            "trainable_parameters": self.trainable,
            "history": self.fit.history,
            **TASKS[self.experiment.task].row_extras(self),
        }


def datasets(experiment: Experiment, settings: RunSettings):
    """``(train, val, test)`` for the experiment under the settings (its task chooses the data)."""
    spec = task_spec(experiment.task)
    if settings.data not in spec.data_kinds:
        kinds = " or ".join(repr(k) for k in spec.data_kinds)
        raise ExperimentError(f"data {settings.data!r} does not fit {experiment.name} (task {experiment.task}); choose {kinds}")
    return spec.datasets(experiment, settings)


def _avel_datasets(experiment: Experiment, settings: RunSettings):
    """SynthAVE or AVE (from ``settings.data_root``) at the backbone's sizes."""
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


def _avqa_datasets(experiment: Experiment, settings: RunSettings):
    """SynthAVQA or MUSIC-AVQA (from ``settings.data_root``) at the backbone's sizes.

    The val and test splits use the train split's vocabularies (as MUSIC-AVQA's code does). The
    synthetic splits keep every rendered video in memory, so only the first epoch renders. A
    MUSIC-AVQA directory holds ``avqa-train.json``, ``avqa-val.json``, ``avqa-test.json`` and
    ``videos/{video_id}.mp4``; its videos are decoded on every read.
    """
    if not isinstance(experiment.data, SynthAVQAConfig):
        raise ExperimentError(f"{experiment.name}: an AVQA experiment needs SynthAVQAConfig data, got {type(experiment.data).__name__}")
    if settings.data == "synth":
        config = experiment.data if settings.backbone == MICRO_VIT else replace(
            experiment.data, image_size=SYNTH_AVE_VITB.image_size, fbank=SYNTH_AVE_VITB.fbank, num_segments=NUM_SEGMENTS)
        train = SynthAVQA(config, "train", keep_videos=None)
        return (train, *(SynthAVQA(config, split, vocab=train.vocab, keep_videos=None) for split in ("val", "test")))
    if settings.data == "music-avqa":
        from avpet_core.data.ave import AVE_FBANK_MICRO
        from avpet_core.data.music_avqa import MusicAVQA, VideoFolderMedia

        if settings.data_root is None:
            raise ExperimentError("data 'music-avqa' needs --data-root, the MUSIC-AVQA directory with avqa-train.json, "
                                  "avqa-val.json, avqa-test.json and videos/")
        root = Path(settings.data_root)
        if not root.is_dir():
            raise ExperimentError(f"{root}: MUSIC-AVQA directory not found")
        if settings.backbone == MICRO_VIT:
            media = VideoFolderMedia(root / "videos", image_size=experiment.data.image_size, fbank=AVE_FBANK_MICRO)
        else:
            media = VideoFolderMedia(root / "videos")
        train = MusicAVQA(root / "avqa-train.json", media)
        return (train, *(MusicAVQA(root / f"avqa-{split}.json", media, vocab=train.vocab) for split in ("val", "test")))
    raise ExperimentError(f"unknown data {settings.data!r} for an AVQA experiment; choose 'synth' or 'music-avqa'")


def build(experiment: Experiment, settings: RunSettings, num_classes: int, *, vocab_size: int | None = None):
    """The dual-stream model and the head of an experiment (seeded).

    ``num_classes`` is the number of AVEL classes (background included) or of AVQA answers;
    ``vocab_size`` (AVQA only) the number of question tokens, ``<pad>`` and ``<unk>`` included.
    """
    if experiment.head not in task_spec(experiment.task).heads:
        raise ExperimentError(f"head {experiment.head!r} does not fit task {experiment.task!r}; choose one of {list(task_spec(experiment.task).heads)}")
    torch.manual_seed(settings.seed)
    adapter = experiment.adapter_config if experiment.adapter_config is not None else experiment.adapter
    model = build_dual_stream(settings.backbone, adapter, experiment.streams,
                              pretrained=settings.pretrained, weights_file=settings.weights_file)
    if experiment.head == "cmbs":
        head = CMBSHead(model.embed_dim, num_classes, CMBSHeadConfig(hidden=experiment.head_hidden))
    elif experiment.head == "segment":
        head = SegmentClassifier(model.embed_dim, num_classes)
    elif experiment.head == "avst":
        if vocab_size is None:
            raise ExperimentError("the AVST head needs the question vocabulary size")
        # Offline: a narrow head for the micro-ViT; with a paper backbone, AVST's own width (512).
        width = experiment.head_hidden if settings.backbone == MICRO_VIT else AVQAHeadConfig().hidden
        head = AVSTHead(model.embed_dim, vocab_size, num_classes, AVQAHeadConfig(hidden=width, word_dim=width))
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
    observer: Callable[[nn.Module], Callable[[int, int, float], None]] | None = None,
) -> ExperimentResult:
    """Train one row and evaluate its best epoch on the test split.

    ``splits`` — ``(train, val, test)`` already built by :func:`datasets` for this experiment and
    settings — lets the rows of a table share their data instead of generating it again.
    ``observer`` is called with the built model and returns the ``on_step`` callback of
    :func:`~avpet_core.train.fit` (e.g. :class:`avpet_core.analysis.GateRecorder`); it comes back as
    ``result.observer``. The trained model and head (best epoch) come back as ``result.model`` and
    ``result.head``.
    """
    from avpet_core.params import count_adapted

    experiment = get_experiment(experiment) if isinstance(experiment, str) else experiment
    if resume and run_dir is None:
        raise ExperimentError("resuming needs the run directory of the run (--run-dir)")
    spec = task_spec(experiment.task)
    train_set, val_set, test_set = splits if splits is not None else datasets(experiment, settings)
    model, head = build(experiment, settings, **spec.head_sizes(train_set))
    training = training_config(experiment, settings)
    on_step = observer(model) if observer is not None else None
    with tempfile.TemporaryDirectory(prefix="avpet-run-") as scratch:
        directory = Path(run_dir) if run_dir is not None else Path(scratch)
        result = fit(model, head, spec.task(), train_set, val_set, training, directory, resume=resume,
                     metadata={"experiment": experiment.name, "settings": settings.__dict__}, on_step=on_step)
        if distributed_context()[0] != 0:  # under torchrun only rank 0 wrote the checkpoints and reports
            return ExperimentResult(experiment, settings, result)
        load_adapters(directory / "best", model, head)
    test = evaluate(model, head, spec.task(), test_set, training)
    counts = count_adapted(model, head)
    return ExperimentResult(experiment, settings, result, test, trainable=counts.trainable, adapter=counts.adapter,
                            baselines=spec.baselines(train_set, test_set), model=model, head=head, observer=on_step)


def training_config(experiment: Experiment, settings: RunSettings) -> TrainConfig:
    """The optimisation settings of a row: its offline ones on CPU, the paper's (:data:`PAPER_TRAINING`,
    15 epochs at 3e-4) on cuda; the settings' seed, device and epoch count (if given) override them."""
    base = experiment.training if settings.device == "cpu" else PAPER_TRAINING
    return replace(base, device=settings.device, seed=settings.seed, progress=settings.progress,
                   epochs=settings.epochs or base.epochs)


def reproduce(table: str, settings: RunSettings = RunSettings()) -> list[ExperimentResult]:
    """Run every row of ``table`` (``"table4"``, ``"table1"``, ``"table2"``) with the same settings."""
    if table not in TABLES:
        raise ExperimentError(f"unknown table {table!r}; choose one of {sorted(TABLES)}")
    results, shared = [], {}
    for name in TABLES[table]:
        experiment = get_experiment(name)
        key = (experiment.task, experiment.data)
        if key not in shared:  # rows with the same data reuse its (memory-cached) splits
            shared[key] = datasets(experiment, settings)
        results.append(run_experiment(experiment, settings, splits=shared[key]))
    return results


def format_table(results: list[ExperimentResult]) -> str:
    """Ours beside the paper's, labelled with where each came from (the layout is the task's)."""
    first = results[0]
    lines = [f"ours: {first.settings.describe(first.experiment.task)}  |  paper: {first.experiment.paper_setting}"]
    return "\n".join(lines + task_spec(first.experiment.task).table_lines(results))


def _avel_table_lines(results: list[ExperimentResult]) -> list[str]:
    lines = [f"{'row':34} {'adapter':>9} {'test acc (ours)':>16} {'paper':>7}"]
    for r in results:
        ours = f"{100 * r.test['accuracy']:.1f}%"
        paper = f"{r.experiment.paper:.2f}%" if r.experiment.paper is not None else "-"
        lines.append(f"{r.experiment.label:34} {r.adapter / 1e6:8.3f}M {ours:>16} {paper:>7}")
    return lines


AVQA_TABLE_COLUMNS = (("Audio", "audio"), ("Visual", "visual"), ("A-V", "audio_visual"), ("Avg", "group_mean"), ("overall", "accuracy"))
"""The printed Table 2 columns: the three groups, the paper's "Avg" (their mean) and the accuracy over all questions."""


def _percent(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def _avqa_table_lines(results: list[ExperimentResult]) -> list[str]:
    """Two lines per row — ours, then the paper's — and a per-type block (the paper gives no per-type numbers)."""
    from avpet_core.data.music_avqa import QUESTION_TYPES, type_name
    from avpet_core.train import avqa_metric_key

    header = "".join(f" {name:>7}" for name, _ in AVQA_TABLE_COLUMNS)
    lines = [f"{'test accuracy (%)':34} {'':5} {'adapter':>8} {'trained':>8}{header}"]
    for r in results:
        e = r.experiment
        ours = "".join(f" {_percent(r.test.get(key), 1):>7}" for _, key in AVQA_TABLE_COLUMNS)
        lines.append(f"{e.label:34} {'ours':5} {r.adapter / 1e6:7.3f}M {r.trainable / 1e6:7.3f}M{ours}")
        paper_columns = dict(e.paper_columns)
        paper = "".join(f" {_percent(None if key not in paper_columns else paper_columns[key] / 100, 2):>7}"
                        for _, key in AVQA_TABLE_COLUMNS)
        counts = [f"{m:.1f}M" for m in e.paper_parameters_m] if e.paper_parameters_m else ["-", "-"]
        lines.append(f"{'':34} {'paper':5} {counts[0]:>8} {counts[1]:>8}{paper}")
    majority = results[0].baselines.get("majority_answer")
    if majority is not None:
        cells = "".join(f" {_percent(majority.get(key), 1):>7}" for _, key in AVQA_TABLE_COLUMNS)
        lines.append(f"{'majority answer of the train split':34} {'ours':5} {'-':>8} {'-':>8}{cells}")
    lines.append("Avg: mean of the Audio, Visual and A-V accuracies (the paper's Avg); overall: over all questions.")
    names = [r.experiment.name.split("/")[-1] for r in results]
    lines.append("")
    lines.append(f"{'per question type (ours, %)':34}" + "".join(f" {n:>7}" for n in names))
    for index in range(len(QUESTION_TYPES)):
        key = avqa_metric_key(type_name(index))
        lines.append(f"{type_name(index):34}" + "".join(f" {_percent(r.test.get(key), 1):>7}" for r in results))
    return lines


def _avqa_row_extras(result: ExperimentResult) -> dict:
    e = result.experiment
    return {
        "task": e.task,
        "test": dict(result.test),
        "paper_columns": dict(e.paper_columns),
        "paper_adapter_parameters_m": e.paper_parameters_m[0] if e.paper_parameters_m else None,
        "paper_trainable_parameters_m": e.paper_parameters_m[1] if e.paper_parameters_m else None,
        "baselines": result.baselines,
    }


@dataclass(frozen=True)
class TaskSpec:
    """Everything an experiment's ``task`` decides.

    Attributes:
        task: makes the training loop's task (:class:`~avpet_core.train.Task`).
        synthetic: the name of the offline data set, for the labels of printed tables.
        data_kinds: the ``RunSettings.data`` values the task reads.
        heads: the head names it accepts.
        datasets: ``(experiment, settings) -> (train, val, test)``.
        head_sizes: ``train_set -> keyword arguments of`` :func:`build`.
        baselines: ``(train_set, test_set) -> {name: metrics}``, data-only reference rows.
        row_extras: ``result -> {key: value}`` added to the JSON row.
        table_lines: ``results -> lines`` of the printed table, below the settings line.
    """

    task: Callable[[], object]
    synthetic: str
    data_kinds: tuple[str, ...]
    heads: tuple[str, ...]
    datasets: Callable
    head_sizes: Callable
    baselines: Callable
    row_extras: Callable
    table_lines: Callable


TASKS: dict[str, TaskSpec] = {
    "avel": TaskSpec(
        task=AVELTask, synthetic="SynthAVE", data_kinds=("synth", "ave"), heads=("cmbs", "segment"),
        datasets=_avel_datasets,
        head_sizes=lambda train: {"num_classes": train.num_classes},
        baselines=lambda train, test: {},
        row_extras=lambda result: {},
        table_lines=_avel_table_lines,
    ),
    "avqa": TaskSpec(
        task=AVQATask, synthetic="SynthAVQA", data_kinds=("synth", "music-avqa"), heads=("avst",),
        datasets=_avqa_datasets,
        head_sizes=lambda train: {"num_classes": train.num_answers, "vocab_size": len(train.question_vocab)},
        baselines=lambda train, test: {"majority_answer": majority_answer_metrics(train, test)},
        row_extras=_avqa_row_extras,
        table_lines=_avqa_table_lines,
    ),
}
"""What each task of an :class:`Experiment` chooses (see :class:`TaskSpec`)."""

DATA_KINDS: tuple[str, ...] = tuple(dict.fromkeys(k for spec in TASKS.values() for k in spec.data_kinds))
"""Every value ``RunSettings.data`` may take (each task reads some of them)."""


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ExperimentError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[task]
