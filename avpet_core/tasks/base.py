"""What every task of the book provides: the loop's part and the experiments' part.

The training loop (:func:`avpet_core.train.fit`) needs only :attr:`Task.name`, :attr:`Task.metric`,
:attr:`Task.inputs`, :meth:`Task.features` and :meth:`Task.metrics` (its ``LoopTask`` protocol);
the head does the rest (``head(features, batch)``, ``head.loss``, ``head.predict``). The named
experiments (:mod:`avpet_core.experiments`) also ask a task for its data (given a
:class:`DataRequest`), the sizes its heads need, data-only reference rows, the extra columns of a
JSON row and the layout of its printed table (given :class:`TableRow` values). Nothing here reads
an experiment or its settings: the two dataclasses below are the whole of what a task is told.
A task that only trains (pretraining) leaves the experiments' part at these defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from avpet_core.models.frozen_tokens import FROZEN_KEYS, run_streams
from avpet_core.profiles import OFFLINE, PAPER, Profile


class TaskError(ValueError):
    """A task name, data kind or setting that does not exist."""


@dataclass(frozen=True)
class DataRequest:
    """What a task is asked for when it builds an experiment's ``(train, val, test)`` splits.

    Attributes:
        experiment: the experiment's name (for error messages).
        config: the experiment's offline data config (a ``SynthAVEConfig``, ``SynthAVQAConfig``, ...:
            the task says which it reads).
        kind: which data: ``"synth"`` (the offline synthetic set) or a real data set's name
            (one of the task's :attr:`Task.data_kinds`).
        root: the real data set's directory (``None`` for synthetic data).
        profile: offline or the paper's setting (:mod:`avpet_core.profiles`): the sizes to build at.
    """

    experiment: str
    config: Any
    kind: str
    root: Path | None
    profile: Profile


@dataclass(frozen=True)
class TableRow:
    """One trained row as a task's printed table and JSON columns see it.

    Attributes:
        name: the experiment's name (``"table2/avpea"``).
        label: its label in tables.
        metrics: the test metrics (the task's keys; empty on ranks other than 0).
        adapter: adapter parameters; ``trainable``: every parameter the run trained.
        paper: the paper's headline number in % (``None``: the paper has none).
        paper_columns: the paper's other columns, keyed like ``metrics``, in %.
        paper_parameters_m: the paper's ``(adapter, trainable)`` counts in millions.
        baselines: data-only reference rows, ``{name: metrics}``.
    """

    name: str
    label: str
    metrics: Mapping[str, Any]
    adapter: int = 0
    trainable: int = 0
    paper: float | None = None
    paper_columns: Mapping[str, float] = field(default_factory=dict)
    paper_parameters_m: tuple[float, float] | None = None
    baselines: Mapping[str, Mapping] = field(default_factory=dict)


class Task:
    """Base class of the tasks: a model reads a batch's ``frames`` and ``audio``; metrics are the task's."""

    name: str = ""
    metric: str = "accuracy"  # the metric that picks the best epoch (higher is better) and heads a row
    inputs: tuple[str, ...] = ("frames", "audio", *FROZEN_KEYS)  # batch keys the model reads (not kept for the metrics)
    synthetic: str = ""  # the name of the offline data set, for printed tables
    data_kinds: tuple[str, ...] = ()  # the DataRequest.kind values the task reads

    # -- the loop's part ------------------------------------------------------------------------
    def features(self, model, batch: dict):
        """Run the model on a batch's inputs (with the tokens of its frozen streams where the batch has them)."""
        return run_streams(model, batch)

    def metrics(self, predictions, batches: list[dict]) -> dict:
        """The metrics of an evaluation pass: ``predictions`` as :func:`avpet_core.evaluation.predict`
        gathers them, ``batches`` without the inputs. Must include :attr:`metric`."""
        raise NotImplementedError

    # -- the experiments' part ------------------------------------------------------------------
    def datasets(self, request: DataRequest) -> tuple:
        """``(train, val, test)`` for a :class:`DataRequest`."""
        raise TaskError(f"task {self.name!r} has no named experiments")

    def head_sizes(self, train_set) -> dict[str, int]:
        """What the data fixes of a head (``num_classes``, ``vocab_size``); the head checks them."""
        return {"num_classes": train_set.num_classes}

    def baselines(self, train_set, test_set) -> dict:
        """Data-only reference rows, ``{name: metrics}``."""
        return {}

    def row_extras(self, row: TableRow) -> dict:
        """Columns the task adds to an experiment's JSON row."""
        return {}

    def table_lines(self, rows: list[TableRow]) -> list[str]:
        """The printed table of a task's rows, below the settings line: by default one line per row,
        its adapter size, the task's metric and the paper's number."""
        lines = [f"{'row':34} {'adapter':>9} {'test ' + self.metric + ' (ours)':>22} {'paper':>7}"]
        for r in rows:
            value = r.metrics.get(self.metric)
            ours = "-" if value is None else f"{100 * value:.1f}%"
            paper = f"{r.paper:.2f}%" if r.paper is not None else "-"
            lines.append(f"{r.label:34} {r.adapter / 1e6:8.3f}M {ours:>22} {paper:>7}")
        return lines


def require(request: DataRequest, config_type: type, task: str) -> None:
    """Refuse a data config of another type than the task reads (one clear error naming the experiment)."""
    if not isinstance(request.config, config_type):
        raise TaskError(
            f"{request.experiment}: an {task} experiment needs {config_type.__name__} data, "
            f"got {type(request.config).__name__}"
        )


__all__ = ["OFFLINE", "PAPER", "DataRequest", "Profile", "TableRow", "Task", "TaskError", "require"]
