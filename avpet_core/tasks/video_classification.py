"""Video classification on SynthAVE (chapter 8): one label per video from a model's summary tokens.

The video label is the event class of the video if any of its segments is an event, else
background (SynthAVE's last label, so ``labels.min()`` over the segments). Two evaluations of a
(pretrained) shared low-rank multimodal Transformer use it (:mod:`avpet_core.pretraining`): a
**linear probe** on its frozen summary features (:func:`~avpet_core.pretraining.extract_features`,
then :func:`avpet_core.evaluation.linear_probe`), and **fine-tuning** of the whole model (stems
included) with a linear head (:func:`~avpet_core.pretraining.finetune`), trained by the book's loop
with this task. The data is a SynthAVE split as tensors
(:class:`~avpet_core.data.video_tensors.VideoTensors`, :func:`~avpet_core.data.video_tensors.load_videos`).
"""

from __future__ import annotations

import torch

from avpet_core.evaluation import accuracy
from avpet_core.tasks.base import Task


class VideoClassificationTask(Task):
    """SynthAVE video classification: the head (:class:`~avpet_core.heads.video.VideoClassHead`) reads
    the summary tokens, cross-entropy on the video label; metric: accuracy."""

    name = "video-classification"
    synthetic = "SynthAVE"

    def metrics(self, predictions: torch.Tensor, batches: list[dict]) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, torch.cat([b["labels"] for b in batches]))}
