"""Chapter 8's study: pretrain shared low-rank multimodal Transformers over seeds and objectives,
then evaluate them by a linear probe and by fine-tuning.

Pretraining is the ``multimodal-pretraining`` task (:mod:`avpet_core.tasks.multimodal_pretraining`:
its objectives, :class:`~avpet_core.tasks.multimodal_pretraining.PretrainHeads`, trained by
:func:`avpet_core.train.fit`); both evaluations are the ``video-classification`` task
(:mod:`avpet_core.tasks.video_classification`) on SynthAVE splits held as tensors
(:class:`~avpet_core.data.video_tensors.VideoTensors`):

* :func:`pretrain` — pretrain a model in place (labels unused), under :data:`PRETRAINING`;
* :func:`seeded_model` — the model's initialisation for a seed;
* :func:`extract_features`, :func:`probe_accuracy` — the frozen summary features, and the test
  accuracy of a linear probe on them (:func:`avpet_core.evaluation.linear_probe`);
* :func:`pretraining_study` — one pretrained and probed model per run (objective changes) and seed;
* :func:`finetune`, :func:`classification_accuracy` — fine-tune a copy of a model end to end with a
  linear head (:class:`VideoClassifier`), under :data:`FINETUNING`, and its test accuracy;
* :func:`finetuning_study` — every model of a study (pretrained, untrained) fine-tuned at its seed;
* :func:`training_memory_study` — what one fine-tuning step of each sharing variant holds;
* :func:`loss_windows` — a study's losses, first and last ten steps, as the rows of a seed table
  (:func:`avpet_core.stats.seed_frame`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from avpet_core.data.video_tensors import VideoTensors
from avpet_core.evaluation import linear_probe, predict
from avpet_core.heads.video import VideoClassHead
from avpet_core.memory import training_memory
from avpet_core.models.shared_lowrank import SharedMultimodalTransformer, SharedTransformerConfig
from avpet_core.tasks.multimodal_pretraining import MultimodalPretrainConfig, MultimodalPretrainingTask, PretrainHeads
from avpet_core.tasks.video_classification import VideoClassificationTask
from avpet_core.train import FitResult, TrainConfig, evaluate, fit

# ---------------------------------------------------------------------------------------------
# Pretraining and the linear probe.
# ---------------------------------------------------------------------------------------------

PRETRAINING = TrainConfig(epochs=5, batch_size=16, model_lr=1e-3, head_lr=1e-3, progress=False)
"""Offline optimisation of pretraining: 5 epochs of 256 videos (80 steps), AdamW 1e-3, warm-up and cosine."""


def pretrain(
    model: SharedMultimodalTransformer,
    videos: VideoTensors,
    objectives: MultimodalPretrainConfig = MultimodalPretrainConfig(),
    training: TrainConfig = PRETRAINING,
) -> dict[str, list[float]]:
    """Pretrain ``model`` in place (labels unused) with :func:`~avpet_core.train.fit`; returns the
    per-step history of every loss."""
    heads = PretrainHeads(model.config.dim, objectives, seed=training.seed)
    fit(model, heads, MultimodalPretrainingTask(), videos, None, training)
    return heads.history


def seeded_model(config: SharedTransformerConfig, seed: int) -> SharedMultimodalTransformer:
    """The model's initialisation for ``seed`` (the global RNG seeded, then the model built)."""
    torch.manual_seed(seed)
    return SharedMultimodalTransformer(config)


def extract_features(
    model: SharedMultimodalTransformer, videos: VideoTensors, batch_size: int = 50, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The summary features ``(N, 2 D)`` of every video (:func:`avpet_core.evaluation.predict`; the
    model's train/eval mode is restored after)."""
    was_training = model.training
    features, _ = predict(
        lambda batch: model(batch["frames"], batch["audio"]).summary,
        [model],
        videos,
        batch_size=batch_size,
        device=device,
    )
    model.train(was_training)
    return features


def probe_accuracy(
    model: SharedMultimodalTransformer,
    train: VideoTensors,
    test: VideoTensors,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Linear-probe test accuracy (:func:`avpet_core.evaluation.linear_probe`) on the frozen summary tokens."""
    return linear_probe(
        extract_features(model, train, device=device),
        train.video_labels,
        extract_features(model, test, device=device),
        test.video_labels,
        train.num_classes,
        seed=seed,
    )


def pretraining_study(
    config: SharedTransformerConfig,
    train: VideoTensors,
    test: VideoTensors,
    runs: dict[str, dict],
    seeds: tuple[int, ...] | list[int],
    *,
    every_seed: tuple[str, ...],
    objectives: MultimodalPretrainConfig = MultimodalPretrainConfig(),
    training: TrainConfig = PRETRAINING,
    device: str | torch.device = "cpu",
) -> dict[str, dict[int, dict]]:
    """Pretrain one model per run and seed, each run changing some objectives of ``objectives``, and probe it.

    ``runs`` maps a run's name to its changes (``{"negatives": "random"}``); the runs named in
    ``every_seed`` use every seed, the others the first only. Returns ``result[name][seed]`` =
    ``{"model", "history", "probe"}`` (the pretrained model, its per-step losses, its probe accuracy).
    """
    result: dict[str, dict[int, dict]] = {name: {} for name in runs}
    for name, changes in runs.items():
        for seed in seeds if name in every_seed else list(seeds)[:1]:
            model = seeded_model(config, seed)
            history = pretrain(
                model, train, replace(objectives, **changes), replace(training, seed=seed, device=str(device))
            )
            result[name][seed] = {
                "model": model,
                "history": history,
                "probe": probe_accuracy(model, train, test, seed, device),
            }
    return result


# ---------------------------------------------------------------------------------------------
# Fine-tuning.
# ---------------------------------------------------------------------------------------------

FINETUNING = TrainConfig(epochs=5, batch_size=16, model_lr=1e-3, head_lr=1e-3, progress=False)
"""Offline optimisation of fine-tuning: the same budget as :data:`PRETRAINING`."""


class VideoClassifier(nn.Module):
    """The multimodal Transformer and a linear head on its summary tokens."""

    def __init__(self, model: SharedMultimodalTransformer, num_classes: int):
        super().__init__()
        self.model, self.head = model, VideoClassHead(2 * model.config.dim, num_classes)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(frames, audio))


def finetune(
    model: SharedMultimodalTransformer,
    videos: VideoTensors,
    training: TrainConfig = FINETUNING,
    val_videos: VideoTensors | None = None,
) -> tuple[VideoClassifier, FitResult]:
    """Fine-tune a copy of ``model`` end to end (stems, Transformers and head) with
    :func:`~avpet_core.train.fit`; returns the classifier after the last epoch and the run's result.
    ``val_videos``, if given, is evaluated after every epoch (for the history; nothing is selected)."""
    torch.manual_seed(training.seed)
    classifier = VideoClassifier(copy.deepcopy(model), videos.num_classes)
    result = fit(classifier.model, classifier.head, VideoClassificationTask(), videos, val_videos, training)
    classifier.train()
    return classifier, result


def classification_accuracy(
    classifier: VideoClassifier, videos: VideoTensors, training: TrainConfig = FINETUNING
) -> float:
    """Test accuracy of ``classifier`` on ``videos`` (the loop's :func:`~avpet_core.train.evaluate`)."""
    metrics = evaluate(classifier.model, classifier.head, VideoClassificationTask(), videos, training)
    classifier.train()
    return metrics["accuracy"]


# ---------------------------------------------------------------------------------------------
# The studies of chapter 8 over seeds: fine-tuning, training memory, the tables.
# ---------------------------------------------------------------------------------------------


def finetuning_study(
    models: Mapping[str, Mapping[int, SharedMultimodalTransformer]],
    train: VideoTensors,
    test: VideoTensors,
    training: TrainConfig = FINETUNING,
) -> dict[str, dict[int, dict]]:
    """Fine-tune every model of ``models[kind][seed]`` (a copy; :func:`finetune`) with ``training`` at
    that seed and measure its test accuracy. Returns ``result[kind][seed]`` = ``{"accuracy",
    "train_loss"}`` (the test accuracy and the mean training loss of every epoch). Each run seeds
    itself, so the order of the runs does not change them."""
    result: dict[str, dict[int, dict]] = {kind: {} for kind in models}
    for kind, by_seed in models.items():
        for seed, model in by_seed.items():
            config = replace(training, seed=seed)
            classifier, fit_result = finetune(model.to(config.device), train, config)
            result[kind][seed] = {
                "accuracy": classification_accuracy(classifier, test, config),
                "train_loss": [row["train_loss"] for row in fit_result.history],
            }
    return result


def training_memory_study(
    variants,
    videos: VideoTensors,
    batch_size: int,
    seed: int,
    device: str | torch.device = "cpu",
    paper_parameters: Sequence[int] | None = None,
) -> list[dict]:
    """What one fine-tuning step of each variant (``(name, config)`` pairs, e.g.
    :func:`~avpet_core.models.shared_lowrank.sharing_variants`) holds on a batch of ``videos``, with its
    parameter counts: ``{"variant", "transformer", "all", "memory"}`` per variant, and
    ``"paper_weights_gib"`` (float32 weights, gradients and AdamW's two moments: 16 bytes a weight) for
    the paper-size counts ``paper_parameters`` if given. Memory and counts depend only on the shapes,
    so each variant is measured once, at its initialisation for ``seed``."""
    index = torch.arange(batch_size)
    frames, audio = (x.to(device) for x in videos.batch(index))
    labels = videos.video_labels[index].to(device)
    rows = []
    for k, (name, config) in enumerate(variants):
        model = seeded_model(config, seed).to(device)
        classifier = VideoClassifier(model, videos.num_classes).to(device)
        row = {
            "variant": name,
            "transformer": model.transformer_parameters(),
            "all": sum(p.numel() for p in classifier.parameters()),
            "memory": training_memory(classifier, frames, audio, labels),
        }
        if paper_parameters is not None:
            row["paper_weights_gib"] = 16 * paper_parameters[k] / 2**30
        rows.append(row)
    return rows


LOSSES: tuple[tuple[str, str], ...] = (
    ("MEP visual", "mep_visual"),
    ("MEP audio", "mep_audio"),
    ("pair (BCE)", "pair"),
    ("contrastive", "contrastive"),
)
"""The pretraining losses of a run's history, as ``(column label, key)``."""


def loss_ends(history: Mapping[str, Sequence[float]], key: str, width: int = 10) -> tuple[float, float]:
    """The mean loss of the first and of the last ``width`` steps of ``history[key]``."""
    return float(np.mean(history[key][:width])), float(np.mean(history[key][-width:]))


def loss_windows(runs: Mapping[str, Mapping[int, dict]], width: int = 10) -> dict[str, dict[int, dict]]:
    """A pretraining study's losses as rows of :func:`avpet_core.stats.seed_frame`: for every run,
    ``"<run>: first ten steps"`` and ``"<run>: last ten steps"`` (with ``width`` steps), each
    ``{seed: {loss key: mean loss}}``; a loss the run does not train is ``None``."""
    rows: dict[str, dict[int, dict]] = {}
    for name, by_seed in runs.items():
        for end, label in enumerate(("first", "last")):
            rows[f"{name}: {label} ten steps"] = {
                seed: {
                    key: loss_ends(run["history"], key, width)[end] if key in run["history"] else None
                    for _, key in LOSSES
                }
                for seed, run in by_seed.items()
            }
    return rows
