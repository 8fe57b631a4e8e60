"""Video classification on SynthAVE (chapter 8): one label per video from a model's summary tokens.

The video label is the event class of the video if any of its segments is an event, else
background (SynthAVE's last label, so ``labels.min()`` over the segments). Two evaluations of a
(pretrained) shared low-rank multimodal Transformer use it: a **linear probe** on its frozen
summary features (:func:`extract_features`, then :func:`avpet_core.evaluation.linear_probe`), and
**fine-tuning** of the whole model (stems included) with a linear head (:func:`finetune`), trained
by the book's loop. The data is a SynthAVE split as tensors (:class:`VideoTensors`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig
from avpet_core.evaluation import accuracy, predict
from avpet_core.heads.video import VideoClassHead
from avpet_core.models.shared_lowrank import SharedMultimodalTransformer
from avpet_core.tasks.base import Task
from avpet_core.train import FitResult, TrainConfig, evaluate, fit


@dataclass(frozen=True)
class VideoTensors:
    """A SynthAVE split as tensors: ``frames`` ``(N, T, 3, S, S)``, ``audio`` ``(N, T, 1, mel, frames)``,
    segment ``labels`` ``(N, T)`` and the video label ``video_labels`` ``(N,)``."""

    frames: torch.Tensor
    audio: torch.Tensor
    labels: torch.Tensor
    video_labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One video as the training loop reads it; ``labels`` is the video label."""
        return {"frames": self.frames[index], "audio": self.audio[index], "labels": self.video_labels[index]}

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frames[index], self.audio[index]


def load_videos(config: SynthAVEConfig, split: str, count: int | None = None) -> VideoTensors:
    """The first ``count`` videos of a SynthAVE split (all by default) stacked into tensors."""
    dataset = SynthAVE(config, split)
    items = [dataset[i] for i in range(len(dataset) if count is None else min(count, len(dataset)))]
    labels = torch.stack([item["labels"] for item in items])
    return VideoTensors(
        frames=torch.stack([item["frames"] for item in items]),
        audio=torch.stack([item["audio"][:, :1] for item in items]),
        labels=labels,
        video_labels=labels.min(dim=1).values,
        num_classes=dataset.num_classes,
    )


class VideoClassificationTask(Task):
    """SynthAVE video classification: the head (:class:`~avpet_core.heads.video.VideoClassHead`) reads
    the summary tokens, cross-entropy on the video label; metric: accuracy."""

    name = "video-classification"
    synthetic = "SynthAVE"

    def metrics(self, predictions: torch.Tensor, batches: list[dict]) -> dict[str, float]:
        return {"accuracy": accuracy(predictions, torch.cat([b["labels"] for b in batches]))}


def extract_features(model: SharedMultimodalTransformer, videos: VideoTensors, batch_size: int = 50,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """The summary features ``(N, 2 D)`` of every video (:func:`avpet_core.evaluation.predict`; the
    model's train/eval mode is restored after)."""
    was_training = model.training
    features, _ = predict(lambda batch: model(batch["frames"], batch["audio"]).summary, [model], videos,
                          batch_size=batch_size, device=device)
    model.train(was_training)
    return features


FINETUNING = TrainConfig(epochs=5, batch_size=16, adapter_lr=1e-3, head_lr=1e-3, progress=False)
"""Offline optimisation of fine-tuning: the same budget as :data:`PRETRAINING`."""


class VideoClassifier(nn.Module):
    """The multimodal Transformer and a linear head on its summary tokens."""

    def __init__(self, model: SharedMultimodalTransformer, num_classes: int):
        super().__init__()
        self.model, self.head = model, VideoClassHead(2 * model.config.dim, num_classes)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(frames, audio))


def finetune(model: SharedMultimodalTransformer, videos: VideoTensors, training: TrainConfig = FINETUNING,
             val_videos: VideoTensors | None = None) -> tuple[VideoClassifier, FitResult]:
    """Fine-tune a copy of ``model`` end to end (stems, Transformers and head) with
    :func:`~avpet_core.train.fit`; returns the classifier after the last epoch and the run's result.
    ``val_videos``, if given, is evaluated after every epoch (for the history; nothing is selected)."""
    torch.manual_seed(training.seed)
    classifier = VideoClassifier(copy.deepcopy(model), videos.num_classes)
    result = fit(classifier.model, classifier.head, VideoClassificationTask(), videos, val_videos, training)
    classifier.train()
    return classifier, result


def classification_accuracy(classifier: VideoClassifier, videos: VideoTensors, training: TrainConfig = FINETUNING) -> float:
    """Test accuracy of ``classifier`` on ``videos`` (the loop's :func:`~avpet_core.train.evaluate`)."""
    metrics = evaluate(classifier.model, classifier.head, VideoClassificationTask(), videos, training)
    classifier.train()
    return metrics["accuracy"]
