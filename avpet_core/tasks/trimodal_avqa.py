"""Trimodal question answering (chapter 9): the question read by a frozen language encoder.

The same questions as :mod:`avpet_core.tasks.avqa` (SynthAVQA offline, MUSIC-AVQA from
``--data-root``) and the same metrics (Table 2's columns, :func:`~avpet_core.tasks.avqa.avqa_metrics`),
but the model is a :class:`~avpet_core.models.trimodal.TrimodalModel`: its inputs are the frames,
the spectrograms and the question's *text* (the language encoder tokenises it itself), and the
head is ``trimodal`` (:class:`~avpet_core.heads.trimodal_avqa.TrimodalAVQAHead`). Items carry the
question text under ``"question_text"`` (:class:`QuestionText`).
"""

from __future__ import annotations

from torch.utils.data import Dataset

from avpet_core.data.synthetic.cache import use_disk_cache

from avpet_core.tasks.avqa import AVQATask


class QuestionText(Dataset):
    """An AVQA dataset whose items also carry the question's text (``"question_text"``)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "question_text": self.dataset.questions[index].question}

    def use_disk_cache(self, directory=None, num_workers: int = 0) -> "QuestionText":
        """The wrapped split on disk (:func:`avpet_core.data.synthetic.cache.use_disk_cache`), text kept."""
        return QuestionText(use_disk_cache(self.dataset, directory, num_workers=num_workers))

    def __getattr__(self, name: str):  # answers, vocabularies, questions, deciding segments: the dataset's
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class TrimodalAVQATask(AVQATask):
    """AVQA with the question through the frozen language encoder; metrics: Table 2's columns."""

    name = "trimodal-avqa"
    inputs = ("frames", "audio", "question_text")

    def features(self, model, batch: dict):
        return model(batch["frames"], batch["audio"], batch["question_text"])

    def datasets(self, experiment, settings, profile):
        return tuple(QuestionText(split) for split in super().datasets(experiment, settings, profile))

    def head_sizes(self, train_set) -> dict[str, int]:
        return {"num_classes": train_set.num_answers}
