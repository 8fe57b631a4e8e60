"""Named experiments: one config per row of the tables the book reproduces.

This module is the single source of the experiment settings; ``avpet train --experiment NAME``,
``avpet reproduce TABLE`` and the notebooks all read it. Every row carries the paper's number for
that row, so printed tables can put ours beside it — labelled with the backbone, data and device
that produced ours.

Two ways to run a row (see the design of the book):

* offline default — the micro-ViT pretrained on this machine (``make pretrain``), SynthAVE (or
  SynthAVQA), CPU. The learning rates are 10-30 times AV-PEA's 3e-4 because the offline runs take
  one or two hundred optimiser steps, not thousands;
* the paper's setting — ``backbone="vit_base_patch16_224.augreg_in21k", pretrained=True,
  data="ave"`` (or ``"music-avqa"``) ``, data_root=DIR, device="cuda"``; the learning rates then go
  back to the paper's.

Which of the two is decided once, from the backbone: :meth:`RunSettings.profile` is
:data:`~avpet_core.profiles.OFFLINE` for the micro-ViT and :data:`~avpet_core.profiles.PAPER` for
any other backbone, a table of values (:mod:`avpet_core.profiles`): the task reads it to size its
data, and the head width, the optimisation and the language encoder are read from it.

An experiment's ``task`` names a task of :data:`avpet_core.tasks.TASKS`, which chooses everything
task-specific: the data it reads, the extra columns of its JSON row and the layout of its printed
table; its ``head`` names a head of :data:`avpet_core.heads.HEADS` registered for that task.
Tables 1 and 4 are AVEL on AVE (``task="avel"``); Table 2 is AVQA on MUSIC-AVQA (``task="avqa"``).
A task is told only a :class:`~avpet_core.tasks.base.DataRequest` and given
:class:`~avpet_core.tasks.base.TableRow` values; a row's JSON names the task's metric
(``test_<metric>``), so a task whose metric is not accuracy needs no code here.

A seed study — every row of a table with every seed, rows with the same data sharing it — is
:func:`run_over_seeds`; :func:`seed_table` makes its table (:func:`avpet_core.stats.seed_frame`:
each seed, the mean ± 95% interval, the paper, paired differences with a verdict) and
:func:`history_frame` a row's learning curves over its seeds. The chapters and ``avpet reproduce
--seeds`` use these three.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from avpet_core.adapters import LAVISH_AVQA, AdapterConfig, LSTTAConfig
from avpet_core.backbones import MICRO_VIT
from avpet_core.checkpoints import load_trained
from avpet_core.data.synthetic import SYNTH_FBANK_MICRO, SynthAVEConfig, SynthAVQAConfig
from avpet_core.data.synthetic.cache import use_disk_cache
from avpet_core.heads import build_head, heads_for
from avpet_core.models import build_dual_stream, build_trimodal
from avpet_core.models.frozen_tokens import with_frozen_tokens
from avpet_core.params import count_trained
from avpet_core.profiles import Profile, profile_for
from avpet_core.tasks import TASKS, Task, TaskError, get_task
from avpet_core.tasks.base import DataRequest, TableRow
from avpet_core.train import FitResult, TrainConfig, default_num_workers, distributed_context, evaluate, fit

OFFLINE_DATA = SynthAVEConfig(num_videos=160, num_eval_videos=80, num_test_videos=400)
"""SynthAVE as the offline AVEL runs use it: 160 training videos, 80 for validation (evaluated every
epoch) and 400 for test (4,000 segments, evaluated once a run, so that one evaluation's own noise
is small next to the differences between Table 4's rows; chapter 5 prints it)."""

OFFLINE_TRAINING = TrainConfig(epochs=10, batch_size=8, model_lr=1e-2, head_lr=1e-2)
"""The offline AVEL runs: 10 epochs of 20 steps (batch 8), AdamW at 1e-2 for adapters and head. Ten
epochs, because a run first sits at the background share and leaves it at an epoch of its own;
with fewer, a row's number says when its run left that plateau (chapter 5's learning curves
measure it). The learning rate is raised to make up for a run far shorter than the paper's."""

OFFLINE_AVQA_FBANK = replace(SYNTH_FBANK_MICRO, frame_shift_ms=20.0, target_frames=48)
"""The offline AVQA rows' audio: SynthAVQA's 64 mel bins with a 20 ms hop, 48 frames a second (8 x 6 tokens)."""

OFFLINE_AVQA_DATA = SynthAVQAConfig(
    num_scenes=160, num_eval_scenes=50, num_test_scenes=200, num_segments=5, fbank=OFFLINE_AVQA_FBANK
)
"""SynthAVQA as the offline AVQA rows (Table 2) use it: 160 training scenes (four questions each,
640 questions), 50 for validation (200 questions, evaluated every epoch) and 200 for test (800
questions, evaluated once a run; chapter 7 prints one run's standard error). Five one-second
segments instead of ten and a 20 ms filterbank hop, which together cut the tokens per video to a
third. With a paper backbone the data goes back to ten segments at ViT-B/16's sizes."""

OFFLINE_AVQA_TRAINING = TrainConfig(epochs=2, batch_size=8, model_lr=3e-3, head_lr=3e-3)
"""The offline AVQA rows' optimisation: two epochs of 80 steps (batch 8), AdamW at 3e-3: the budget
of chapter 7, which trains the three rows with three seeds each on one CPU core (it prints each
run's time and the learning curves of this budget)."""


OFFLINE_LSTTA_DATA = SynthAVQAConfig(
    num_scenes=120,
    num_eval_scenes=40,
    num_test_scenes=150,
    num_segments=5,
    fbank=OFFLINE_AVQA_FBANK,
    question_types=(
        "Audio/Comparative",
        "Audio-Visual/Existential",
        "Audio-Visual/Location",
        "Audio-Visual/Comparative",
        "Audio-Visual/Temporal",
    ),
)
"""SynthAVQA as chapter 9's rows use it: the question types whose answer depends on *when* something
sounds (is X playing, which starts first, which is louder while both play, which starts before X),
so that a filter over the frames has something to find; the counting and purely visual types are
left out (every segment decides them). Five segments, the offline AVQA audio."""

OFFLINE_LSTTA_TRAINING = TrainConfig(epochs=2, batch_size=8, model_lr=3e-3, head_lr=3e-3)
"""Chapter 9's optimisation: two epochs at 3e-3, as chapter 7's AVQA rows."""


class ExperimentError(TaskError):
    """An experiment name or setting that does not exist."""


@dataclass(frozen=True)
class Experiment:
    """One row of a reproduced table.

    Attributes:
        name: ``"table4/both"``, ...
        adapter: adapter method (``"none"`` for the frozen backbone with its head only).
        streams: which streams carry adapters.
        head: a head of :data:`avpet_core.heads.HEADS` registered for the task: ``"cmbs"`` (the
            head of AV-PEA's Tables 1 and 4) or ``"segment"`` (LAVISH's) for AVEL; ``"avst"``
            (MUSIC-AVQA's AVST, the head of Table 2) for AVQA.
        paper: the paper's headline number for this row, in % (AVE: per-segment accuracy;
            MUSIC-AVQA: the "Avg" column, the mean of the three group accuracies).
        paper_setting: what the paper's number was measured with.
        task: a key of :data:`avpet_core.tasks.TASKS` (``"avel"``, ``"avqa"``, ...).
        data: the offline data config the task reads (a :class:`SynthAVEConfig` for AVEL, a
            :class:`SynthAVQAConfig` for AVQA; the task checks its type).
        adapter_config: the adapter's settings when they differ from the method's defaults
            (LAVISH's AVQA preset: ``T = 64`` latents, 4 groups, no BatchNorm).
        paper_columns: the paper's other columns for this row, keyed like the task's metrics
            (Table 2: ``"audio"``, ``"visual"``, ``"audio_visual"``, ``"group_mean"``), in %.
        paper_parameters_m: the paper's ``(adapter, trainable)`` parameter counts, in millions.
        training: the row's offline optimisation (with a paper backbone, the profile's).
        head_hidden: the head's width offline (with a paper backbone, the head's own).
        label: the row's name in printed tables.
        model: ``"dual-stream"`` (one frozen ViT, two streams) or ``"trimodal"`` (with a frozen
            language encoder), a key of :data:`MODELS`.
    """

    name: str
    adapter: str
    streams: str
    head: str
    paper: float | None
    paper_setting: str
    task: str = "avel"
    data: Any = OFFLINE_DATA
    training: TrainConfig = OFFLINE_TRAINING
    head_hidden: int = 64
    label: str = ""
    adapter_config: AdapterConfig | None = None
    paper_columns: tuple[tuple[str, float], ...] = ()
    paper_parameters_m: tuple[float, float] | None = None
    model: str = "dual-stream"


TABLE4_SETTING = "AVE, ViT-B/16 (ImageNet-21k), CMBS head (AV-PEA Table 4)"
TABLE2_SETTING = "MUSIC-AVQA, ViT-B/16 (ImageNet-21k), AVST head (AV-PEA Table 2)"
LSTTA_SETTING = "MUSIC-AVQA and three other audio-visual-language tasks (Liu et al. 2023; numbers not public)"
_AVQA_ROW = dict(task="avqa", data=OFFLINE_AVQA_DATA, training=OFFLINE_AVQA_TRAINING)
_LSTTA_ROW = dict(task="trimodal-avqa", model="trimodal", data=OFFLINE_LSTTA_DATA, training=OFFLINE_LSTTA_TRAINING)
_LSTTA_ROWS = (
    ("none", "none", None, "frozen encoders, answer head only"),
    ("avpea", "avpea", None, "+ AV-PEA in audio and visual"),
    ("lavish", "lavish", LAVISH_AVQA, "+ LAVISH (AVQA preset)"),
    ("lsf", "lstta", LSTTAConfig(short_term=False), "+ LSTTA, long-term filtering only"),
    ("ssi", "lstta", LSTTAConfig(long_term=False), "+ LSTTA, short-term interaction only"),
    ("both", "lstta", LSTTAConfig(), "+ LSTTA, both (w = 2)"),
    ("both-w1", "lstta", LSTTAConfig(window=1), "+ LSTTA, both, w = 1"),
    ("both-w4", "lstta", LSTTAConfig(window=4), "+ LSTTA, both, w = 4"),
)
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("table4/none", "none", "both", "cmbs", 72.01, TABLE4_SETTING, label="CMBS, frozen ViT, no adapter"),
        Experiment(
            "table4/audio", "avpea", "audio", "cmbs", 72.71, TABLE4_SETTING, label="+ AV-PEA in the audio stream"
        ),
        Experiment(
            "table4/visual", "avpea", "visual", "cmbs", 74.68, TABLE4_SETTING, label="+ AV-PEA in the visual stream"
        ),
        Experiment("table4/both", "avpea", "both", "cmbs", 75.65, TABLE4_SETTING, label="+ AV-PEA in both streams"),
        Experiment(
            "table1/avpea",
            "avpea",
            "both",
            "cmbs",
            75.65,
            "AVE, ViT-B/16, CMBS head (AV-PEA Table 1)",
            label="CMBS + AV-PEA",
        ),
        Experiment(
            "table1/lavish",
            "lavish",
            "both",
            "segment",
            75.30,
            "AVE, ViT-B/16, LAVISH's own head (AV-PEA Table 1)",
            label="LAVISH",
        ),
        # AV-PEA Table 2 (ViT-B/16 rows). Its "Avg" is the mean of the Audio, Visual and
        # Audio-Visual accuracies. The paper has no row without adapters.
        Experiment(
            "table2/none",
            "none",
            "both",
            "avst",
            None,
            TABLE2_SETTING,
            label="AVST, frozen ViT, no adapter",
            **_AVQA_ROW,
        ),
        Experiment(
            "table2/lavish",
            "lavish",
            "both",
            "avst",
            68.93,
            TABLE2_SETTING,
            label="AVST + LAVISH (AVQA preset)",
            adapter_config=LAVISH_AVQA,
            paper_parameters_m=(4.4, 13.1),
            paper_columns=(("audio", 73.14), ("visual", 68.73), ("audio_visual", 64.93), ("group_mean", 68.93)),
            **_AVQA_ROW,
        ),
        Experiment(
            "table2/avpea",
            "avpea",
            "both",
            "avst",
            74.90,
            TABLE2_SETTING,
            label="AVST + AV-PEA",
            paper_parameters_m=(3.7, 12.4),
            paper_columns=(("audio", 76.16), ("visual", 78.82), ("audio_visual", 69.72), ("group_mean", 74.90)),
            **_AVQA_ROW,
        ),
        # Chapter 9: LSTTA (Liu et al. 2023) over frozen audio, visual and language encoders. The paper's
        # numbers are not public (only its abstract is), so no row carries one.
        *(
            Experiment(
                f"lstta/{key}",
                method,
                "both",
                "trimodal",
                None,
                LSTTA_SETTING,
                label=label,
                adapter_config=config,
                **_LSTTA_ROW,
            )
            for key, method, config, label in _LSTTA_ROWS
        ),
    )
}
TABLES: dict[str, tuple[str, ...]] = {
    "table4": ("table4/none", "table4/audio", "table4/visual", "table4/both"),
    "table1": ("table1/lavish", "table1/avpea"),
    "table2": ("table2/none", "table2/lavish", "table2/avpea"),
    "lstta": tuple(f"lstta/{row[0]}" for row in _LSTTA_ROWS),
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
    text_encoder: str | None = None  # trimodal rows: None = the profile's (micro_text offline, else PAPER_TEXT_ENCODER)

    def profile(self) -> Profile:
        """Offline (the micro-ViT) or the paper's setting (any other backbone) (:func:`profile_for`)."""
        return profile_for(self.backbone)

    def language_encoder(self) -> str:
        """The trimodal rows' language encoder: the one named, else the profile's."""
        return self.text_encoder if self.text_encoder is not None else self.profile().text_encoder

    def describe(self, task: str = "avel") -> str:
        data = get_task(task).synthetic if self.data == "synth" else f"{self.data} ({self.data_root})"
        weights = "" if self.pretrained or self.weights_file else " (random weights)"
        return f"{self.backbone}{weights}, {data}, {self.device}"


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
    seconds: tuple[float, float] = (0.0, 0.0)  # the run's wall-clock and CPU time (training and test)

    def table_row(self) -> TableRow:
        """The row as its task's table and JSON columns see it."""
        e = self.experiment
        return TableRow(
            e.name,
            e.label,
            dict(self.test),
            adapter=self.adapter,
            trainable=self.trainable,
            paper=e.paper,
            paper_columns=dict(e.paper_columns),
            paper_parameters_m=e.paper_parameters_m,
            baselines=dict(self.baselines),
        )

    def row(self) -> dict:
        """The row as JSON-ready values, under the task's metric: ``test_<metric>`` (``None`` on
        ranks other than 0) and ``best_val_<metric>``, e.g. ``test_accuracy``.

        The task adds its own columns (:meth:`avpet_core.tasks.base.Task.row_extras`); AVEL adds none.
        """
        task = task_of(self.experiment)
        return {
            "name": self.experiment.name,
            "label": self.experiment.label,
            "metric": task.metric,
            f"test_{task.metric}": self.test.get(task.metric),
            f"best_val_{task.metric}": self.fit.best.get(f"val_{task.metric}"),
            "paper": self.experiment.paper,
            "paper_setting": self.experiment.paper_setting,
            "ours_setting": self.settings.describe(self.experiment.task),
            "adapter_parameters": self.adapter,
            "trainable_parameters": self.trainable,
            "history": self.fit.history,
            **task.row_extras(self.table_row()),
        }


def task_of(experiment: Experiment) -> Task:
    """The task of an experiment (:data:`avpet_core.tasks.TASKS`)."""
    if experiment.task not in TASKS:
        raise ExperimentError(f"{experiment.name}: unknown task {experiment.task!r}; choose one of {sorted(TASKS)}")
    return get_task(experiment.task)


def datasets(experiment: Experiment, settings: RunSettings):
    """``(train, val, test)`` for the experiment under the settings (its task chooses the data).

    Synthetic splits are cached on disk (:mod:`avpet_core.data.synthetic.cache`), keyed by their
    config and the numeric environment: the first command renders them (with loader workers on
    CUDA), later commands and chapters read them.
    """
    task = task_of(experiment)
    if settings.data not in task.data_kinds:
        kinds = " or ".join(repr(k) for k in task.data_kinds)
        raise ExperimentError(
            f"data {settings.data!r} does not fit {experiment.name} (task {experiment.task}); choose {kinds}"
        )
    root = Path(settings.data_root) if settings.data_root is not None else None
    splits = task.datasets(DataRequest(experiment.name, experiment.data, settings.data, root, settings.profile()))
    cuda_missing = torch.device(settings.device).type == "cuda" and not torch.cuda.is_available()
    if settings.data == "synth" and not cuda_missing:  # (without the GPU, fit says so before any rendering)
        workers = default_num_workers(settings.device)
        splits = tuple(use_disk_cache(split, num_workers=workers) for split in splits)
    return splits


def build(experiment: Experiment, settings: RunSettings, sizes: Mapping[str, int]):
    """The model (:data:`MODELS`) and the head of an experiment (seeded).

    ``sizes`` is what the data fixes of the head (:meth:`~avpet_core.tasks.base.Task.head_sizes`:
    AVEL ``num_classes``; AVQA also ``vocab_size``), passed through to the head's builder, which
    checks it. The head's width is the profile's (:meth:`~avpet_core.profiles.Profile.head_width`:
    offline ``experiment.head_hidden``, narrow for the micro-ViT; with a paper backbone its own).
    """
    if experiment.head not in heads_for(experiment.task):
        raise ExperimentError(
            f"head {experiment.head!r} does not fit task {experiment.task!r}; "
            f"choose one of {list(heads_for(experiment.task))}"
        )
    torch.manual_seed(settings.seed)
    adapter = experiment.adapter_config if experiment.adapter_config is not None else experiment.adapter
    if experiment.model not in MODELS:
        raise ExperimentError(f"{experiment.name}: unknown model {experiment.model!r}; choose one of {sorted(MODELS)}")
    model = MODELS[experiment.model](settings, adapter, experiment.streams)
    hidden = settings.profile().head_width(experiment.head_hidden)
    return model, build_head(experiment.head, experiment.task, model.feature_dims, sizes, hidden)


def _dual_stream(settings: RunSettings, adapter, streams: str):
    return build_dual_stream(
        settings.backbone, adapter, streams, pretrained=settings.pretrained, weights_file=settings.weights_file
    )


def _trimodal(settings: RunSettings, adapter, streams: str):
    return build_trimodal(
        settings.backbone,
        adapter,
        streams,
        pretrained=settings.pretrained,
        weights_file=settings.weights_file,
        text_encoder=settings.language_encoder(),
    )


MODELS: dict[str, Callable] = {"dual-stream": _dual_stream, "trimodal": _trimodal}
"""How each kind of model of an :class:`Experiment` is built from the run settings, its adapter and streams."""


def run_experiment(
    experiment: Experiment | str,
    settings: RunSettings = RunSettings(),
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    splits: tuple | None = None,
    observer: Callable[[nn.Module], Callable[[int, int, float], None]] | None = None,
    frozen_tokens: bool = True,
) -> ExperimentResult:
    """Train one row and evaluate its best epoch on the test split.

    ``splits`` — ``(train, val, test)`` already built by :func:`datasets` for this experiment and
    settings — lets the rows of a table share their data instead of generating it again.
    ``observer`` is called with the built model and returns the ``on_step`` callback of
    :func:`~avpet_core.train.fit` (e.g. :class:`avpet_core.analysis.GateRecorder`); it comes back as
    ``result.observer``. The trained model and head (best epoch) come back as ``result.model`` and
    ``result.head``. With ``frozen_tokens`` (the default) the streams that carry no adapter are computed
    once per split and read from memory (:mod:`avpet_core.models.frozen_tokens`; the same numbers).
    """
    wall, cpu = time.perf_counter(), time.process_time()
    experiment = get_experiment(experiment) if isinstance(experiment, str) else experiment
    if resume and run_dir is None:
        raise ExperimentError("resuming needs the run directory of the run (--run-dir)")
    task = task_of(experiment)
    train_set, val_set, test_set = splits if splits is not None else datasets(experiment, settings)
    model, head = build(experiment, settings, task.head_sizes(train_set))
    training = training_config(experiment, settings)
    on_step = observer(model) if observer is not None else None
    if frozen_tokens:
        train_run, val_run, test_run = (with_frozen_tokens(model, split) for split in (train_set, val_set, test_set))
    else:
        train_run, val_run, test_run = train_set, val_set, test_set
    with tempfile.TemporaryDirectory(prefix="avpet-run-") as scratch:
        directory = Path(run_dir) if run_dir is not None else Path(scratch)
        result = fit(
            model,
            head,
            task,
            train_run,
            val_run,
            training,
            directory,
            resume=resume,
            metadata={"experiment": experiment.name, "settings": settings.__dict__},
            on_step=on_step,
        )
        if distributed_context()[0] != 0:  # under torchrun only rank 0 wrote the checkpoints and reports
            return ExperimentResult(experiment, settings, result)
        load_trained(directory / "best", model, head)
    test = evaluate(model, head, task, test_run, training)
    counts = count_trained(model, head)
    return ExperimentResult(
        experiment,
        settings,
        result,
        test,
        trainable=counts.trainable,
        adapter=counts.model_trained,
        baselines=task.baselines(train_set, test_set),
        model=model,
        head=head,
        observer=on_step,
        seconds=(time.perf_counter() - wall, time.process_time() - cpu),
    )


def training_config(experiment: Experiment, settings: RunSettings) -> TrainConfig:
    """The optimisation settings of a row: its own in the offline profile, the profile's
    (:data:`~avpet_core.profiles.PAPER_TRAINING`, 15 epochs at 3e-4) with a paper backbone; the
    settings' seed, device and epoch count (if given) override them."""
    base = settings.profile().training_for(experiment.training)
    return replace(
        base,
        device=settings.device,
        seed=settings.seed,
        progress=settings.progress,
        epochs=settings.epochs or base.epochs,
    )


def reproduce(table: str, settings: RunSettings = RunSettings()) -> list[ExperimentResult]:
    """Run every row of ``table`` (``"table4"``, ``"table1"``, ``"table2"``) with the same settings."""
    if table not in TABLES:
        raise ExperimentError(f"unknown table {table!r}; choose one of {sorted(TABLES)}")
    rows = run_over_seeds(TABLES[table], settings, [settings.seed])  # rows with the same data share their splits
    return [rows[name][settings.seed] for name in TABLES[table]]


def run_over_seeds(
    names: list[str] | tuple[str, ...],
    settings: RunSettings,
    seeds: dict[str, list[int]] | list[int],
    observer: Callable | None = None,
    *,
    splits: tuple | None = None,
    done: Mapping[str, Mapping[int, ExperimentResult]] | None = None,
) -> dict[str, dict[int, ExperimentResult]]:
    """The seed study of a table: every named row with every seed (``seeds``: one list for all rows, or a
    list per row), rows with the same task and data sharing their splits; returns ``results[name][seed]``,
    rows in the order of ``names``, seeds in the order given.

    ``splits`` — ``(train, val, test)`` from :func:`datasets` — are used for every row (they must be
    the rows' data); ``done`` holds runs already made (``done[name][seed]``), which are kept, not
    trained again (a chapter's explained first run). The rows' values go into a table with
    :func:`avpet_core.stats.seed_frame`.
    """
    results: dict[str, dict[int, ExperimentResult]] = {}
    shared: dict = {}
    for name in names:
        experiment = get_experiment(name)
        key = (experiment.task, experiment.data)
        if key not in shared:
            shared[key] = splits if splits is not None else datasets(experiment, settings)
        row_seeds = seeds[name] if isinstance(seeds, dict) else seeds
        finished = (done or {}).get(name, {})
        results[name] = {
            seed: finished[seed]
            if seed in finished
            else run_experiment(experiment, replace(settings, seed=seed), splits=shared[key], observer=observer)
            for seed in row_seeds
        }
    return results


def format_table(results: list[ExperimentResult]) -> str:
    """Ours beside the paper's, labelled with where each came from (the layout is the task's)."""
    first = results[0]
    lines = [f"ours: {first.settings.describe(first.experiment.task)}  |  paper: {first.experiment.paper_setting}"]
    return "\n".join(lines + task_of(first.experiment).table_lines([r.table_row() for r in results]))


DATA_KINDS: tuple[str, ...] = tuple(dict.fromkeys(k for task in TASKS.values() for k in task.data_kinds))
"""Every value ``RunSettings.data`` may take (each task reads some of them)."""


def seed_table(
    results: Mapping[str, Mapping[int, ExperimentResult]],
    *,
    baseline: str | None = None,
    pairs: tuple[tuple[str, str], ...] | list = (),
    metric: str | None = None,
    metrics: tuple[tuple[str, str], ...] | list | None = None,
    references: Mapping | None = None,
    compared: tuple[str, ...] | list | None = None,
    seeds_shown: bool = True,
    power: float | None = None,
):
    """A seed study's test results (``results[name][seed]``, from :func:`run_over_seeds`) as
    :func:`avpet_core.stats.seed_frame`: the paper's numbers beside ours, paired differences from
    ``baseline`` and between ``pairs`` (experiment names) and from ``references`` (data-only
    metrics, e.g. the majority answer; for the rows in ``compared``, default all), each with a
    verdict; rows labelled by their last name part.

    One ``metric`` (default: the task's), or several: ``metrics`` as ``(column label, key)`` pairs,
    with the paper's ``paper_columns`` beside them (Table 2's groups). ``power`` adds the power statement
    of every difference not separated (:func:`avpet_core.stats.detectable_difference`). A pandas DataFrame.
    """
    from avpet_core.stats import seed_frame

    labels = {name: name.split("/")[-1] for name in results}
    if metrics is None:
        first = next(iter(next(iter(results.values())).values()))
        metric = metric or task_of(first.experiment).metric
        values = {name: {seed: run.test[metric] for seed, run in by_seed.items()} for name, by_seed in results.items()}
        return seed_frame(
            values,
            paper={name: get_experiment(name).paper for name in results},
            baseline=baseline,
            pairs=pairs,
            labels=labels,
            title=f"test {metric} (%)",
            seeds_shown=seeds_shown,
            references={k: v[metric] for k, v in (references or {}).items()},
            compared=compared,
            power=power,
        )
    values = {name: {seed: run.test for seed, run in by_seed.items()} for name, by_seed in results.items()}
    paper = {name: dict(get_experiment(name).paper_columns) for name in results}
    return seed_frame(
        values,
        metrics=metrics,
        paper=paper,
        baseline=baseline,
        pairs=pairs,
        references=references,
        compared=compared,
        labels=labels,
        seeds_shown=seeds_shown,
        power=power,
    )


def history_frame(runs: Mapping[int, ExperimentResult], key: str):
    """The learning curves of one row's seeds (``runs[seed]``) as a table: ``key`` (e.g.
    ``"val_accuracy"``) by epoch, one column per seed, then each seed's best epoch and test value of
    the task's metric (a pandas DataFrame)."""
    import pandas as pd

    columns = {}
    for seed, run in runs.items():
        values = [epoch.get(key) for epoch in run.fit.history]
        metric = task_of(run.experiment).metric
        columns[f"seed {seed}"] = [*values, run.fit.best.get("epoch"), run.test.get(metric)]
        index = [f"epoch {e + 1}" for e in range(len(values))] + ["best epoch", f"test {metric}"]
    return pd.DataFrame(columns, index=index)
