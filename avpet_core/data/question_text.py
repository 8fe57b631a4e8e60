"""Question text alongside an AVQA dataset's items, for models that tokenise it themselves (chapter 9).

:class:`QuestionText` wraps an AVQA-style dataset (:class:`~avpet_core.data.MusicAVQA`,
:class:`~avpet_core.data.SynthAVQA`) and adds each question's text to its item under
``"question_text"``; everything else (answers, vocabularies, questions, deciding segments) is the
wrapped dataset's. The ``trimodal-avqa`` task (:mod:`avpet_core.tasks.trimodal_avqa`) reads it.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from avpet_core.data.synthetic.cache import use_disk_cache


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
