"""Trimodal question answering (chapter 9): the question read by a frozen language encoder.

The same questions as :mod:`avpet_core.tasks.avqa` (SynthAVQA offline, MUSIC-AVQA from
``--data-root``) and the same metrics (Table 2's columns, :func:`~avpet_core.tasks.avqa.avqa_metrics`),
but the model is a :class:`~avpet_core.models.trimodal.TrimodalModel`: its inputs are the frames,
the spectrograms and the question's *text* (the language encoder tokenises it itself), and the
head is ``trimodal`` (:class:`~avpet_core.heads.trimodal_avqa.TrimodalAVQAHead`). Items carry the
question text under ``"question_text"`` (:class:`~avpet_core.data.question_text.QuestionText`).
"""

from __future__ import annotations

from avpet_core.data.question_text import QuestionText
from avpet_core.tasks.avqa import AVQATask


class TrimodalAVQATask(AVQATask):
    """AVQA with the question through the frozen language encoder; metrics: Table 2's columns."""

    name = "trimodal-avqa"
    inputs = ("frames", "audio", "question_text")

    def features(self, model, batch: dict):
        return model(batch["frames"], batch["audio"], batch["question_text"])

    def datasets(self, request):
        return tuple(QuestionText(split) for split in super().datasets(request))

    def head_sizes(self, train_set) -> dict[str, int]:
        return {"num_classes": train_set.num_answers}
