"""What every task of the book provides: the loop's part and the experiments' part.

The training loop (:func:`avpet_core.train.fit`) needs only :attr:`Task.name`, :attr:`Task.metric`,
:attr:`Task.inputs`, :meth:`Task.features` and :meth:`Task.metrics` (its ``LoopTask`` protocol);
the head does the rest (``head(features, batch)``, ``head.loss``, ``head.predict``). The named
experiments (:mod:`avpet_core.experiments`) also ask a task for its data, the sizes its heads need,
data-only reference rows, the extra columns of a JSON row and the layout of its printed table.
A task that only trains (pretraining) leaves the experiments' part at these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class TaskError(ValueError):
    """A task name, data kind or setting that does not exist."""


@dataclass(frozen=True)
class Profile:
    """Offline or the paper's setting, decided once from the run settings (:meth:`RunSettings.profile`).

    Attributes:
        name: ``"offline"`` (the micro-ViT: synthetic data at its sizes, the book's short CPU runs)
            or ``"paper"`` (a paper backbone: data at ViT-B/16's sizes, the paper's optimisation).
    """

    name: str

    @property
    def offline(self) -> bool:
        return self.name == "offline"


OFFLINE, PAPER = Profile("offline"), Profile("paper")


class Task:
    """Base class of the tasks: a model reads a batch's ``frames`` and ``audio``; metrics are the task's."""

    name: str = ""
    metric: str = "accuracy"  # the metric that picks the best epoch (higher is better)
    inputs: tuple[str, ...] = ("frames", "audio")  # batch keys the model reads (dropped before the metrics)
    synthetic: str = ""  # the name of the offline data set, for printed tables
    data_kinds: tuple[str, ...] = ()  # the RunSettings.data values the task reads

    # -- the loop's part ------------------------------------------------------------------------
    def features(self, model, batch: dict):
        """Run the model on a batch's inputs."""
        return model(batch["frames"], batch["audio"])

    def metrics(self, predictions: torch.Tensor, batches: list[dict]) -> dict:
        raise NotImplementedError

    # -- the experiments' part ------------------------------------------------------------------
    def datasets(self, experiment, settings, profile: Profile) -> tuple:
        """``(train, val, test)`` for an experiment under run settings."""
        raise TaskError(f"task {self.name!r} has no named experiments")

    def head_sizes(self, train_set) -> dict[str, int]:
        """What the data fixes of a head (``num_classes``, ``vocab_size``)."""
        return {"num_classes": train_set.num_classes}

    def baselines(self, train_set, test_set) -> dict:
        """Data-only reference rows, ``{name: metrics}``."""
        return {}

    def row_extras(self, result) -> dict:
        """Columns the task adds to an experiment's JSON row."""
        return {}

    def table_lines(self, results: list) -> list[str]:
        """The printed table of a task's rows, below the settings line."""
        raise TaskError(f"task {self.name!r} has no printed table")
