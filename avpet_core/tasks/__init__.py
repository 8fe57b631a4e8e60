"""The book's tasks, one file each, registered by name.

=========================  ==================================================  ===========================
name                       class                                               chapters
=========================  ==================================================  ===========================
avel                       :class:`~avpet_core.tasks.avel.AVELTask`            5, 6 (Tables 1 and 4)
avqa                       :class:`~avpet_core.tasks.avqa.AVQATask`            7 (Table 2)
video-classification       :class:`~.video_classification.VideoClassificationTask`  8 (probe, fine-tuning)
multimodal-pretraining     :class:`~.multimodal_pretraining.MultimodalPretrainingTask`  8 (pretraining)
trimodal-avqa              :class:`~avpet_core.tasks.trimodal_avqa.TrimodalAVQATask`  9 (LSTTA)
=========================  ==================================================  ===========================

A task owns its data builders, its metrics, its data-only baselines, the extra columns of its JSON
rows and the layout of its printed table (:class:`~avpet_core.tasks.base.Task`); its heads are
registered in :data:`avpet_core.heads.HEADS`. Adding a task is one file and one line below.

Only tasks live here. What several tasks share lives outside: the contrastive losses in
:mod:`avpet_core.losses`, the data wrappers (:class:`~avpet_core.data.video_tensors.VideoTensors`,
:class:`~avpet_core.data.question_text.QuestionText`) in :mod:`avpet_core.data`, and chapter 8's
pretraining and fine-tuning study (models over seeds and objectives) in :mod:`avpet_core.pretraining`.
"""

from __future__ import annotations

from avpet_core.tasks.avel import AVELTask
from avpet_core.tasks.avqa import AVQATask
from avpet_core.tasks.base import OFFLINE, PAPER, DataRequest, Profile, TableRow, Task, TaskError
from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainingTask
from avpet_core.tasks.trimodal_avqa import TrimodalAVQATask
from avpet_core.tasks.video_classification import VideoClassificationTask

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (AVELTask, AVQATask, VideoClassificationTask, MultimodalPretrainingTask, TrimodalAVQATask)
}
"""Every task class by name."""


def get_task(name: str) -> Task:
    """A new instance of the task ``name``."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]()


__all__ = [
    "OFFLINE",
    "PAPER",
    "TASKS",
    "AVELTask",
    "AVQATask",
    "DataRequest",
    "MultimodalPretrainingTask",
    "Profile",
    "TableRow",
    "Task",
    "TaskError",
    "TrimodalAVQATask",
    "VideoClassificationTask",
    "get_task",
]
