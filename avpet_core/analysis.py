"""Looking inside a trained AVEL model: gates over training, per-segment predictions, confusion
matrices and modality controls.

These are the measurements of chapters 05 and 06:

* :class:`GateRecorder` — an ``on_step`` callback for :func:`avpet_core.train.fit` that records
  every scalar gate of every adapter after each optimiser step. For AV-PEA these are ``g`` (the
  CLS cross-attention, eqs. 7-8) and ``h`` (the bottleneck, eqs. 5-6); both start at zero, so
  their trajectories show where in the network training opens each channel.
* :func:`predict_segments` — predictions and labels of a whole dataset, ``(videos, T)`` each.
* :func:`confusion_matrix` — counts of (true, predicted) label pairs.
* :class:`ModalityControl` — a dataset wrapper that replaces the audio by silence or the frames by
  a blank image, so that a trained model can be asked how much it relies on each modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from avpet_core.audio import FbankConfig, audio_to_image
from avpet_core.data.synthetic import SEGMENT_KINDS
from avpet_core.evaluation import predict
from avpet_core.models.frozen_tokens import run_streams, with_frozen_tokens


def adapter_gates(model: nn.Module) -> dict[tuple[str, str, str], torch.Tensor]:
    """Every scalar gate of a :class:`~avpet_core.models.DualStreamViT`'s adapters, per block.

    Returns ``{(stream, site, gate): values}`` where ``values`` is a float tensor ``(depth,)`` —
    e.g. ``("audio", "attn", "g")`` holds AV-PEA's cross-attention gate of the audio stream in every
    block. Streams without adapters are absent; an unadapted model gives ``{}``.
    """
    gates: dict[tuple[str, str, str], list[float]] = {}
    for stream, blocks in model.adapters.items():
        for sites in blocks:
            for site, adapter in sites.items():
                for name, value in adapter.gates().items():
                    gates.setdefault((stream, site, name), []).append(float(value.detach()))
    return {key: torch.tensor(values) for key, values in gates.items()}


@dataclass
class GateRecorder:
    """``on_step`` callback of :func:`~avpet_core.train.fit`: the gates after every optimiser step.

    ``recorder = GateRecorder(model); fit(..., on_step=recorder)``; then ``recorder.trajectory(key)``
    is ``(steps + 1, depth)`` — row 0 is the value before training (zero for every gate of the
    adapters in this library), row ``i`` the value after step ``i``.
    """

    model: nn.Module
    steps: list[tuple[int, int]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    values: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.values.append(adapter_gates(self.model))

    def __call__(self, epoch: int, step: int, loss: float) -> None:
        self.steps.append((epoch, step))
        self.losses.append(loss)
        self.values.append(adapter_gates(self.model))

    @property
    def keys(self) -> list[tuple[str, str, str]]:
        return list(self.values[0])

    def trajectory(self, key: tuple[str, str, str]) -> torch.Tensor:
        """``(steps + 1, depth)`` values of one gate in every block."""
        if key not in self.values[0]:
            raise KeyError(f"no gate {key}; the model's gates are {self.keys}")
        return torch.stack([v[key] for v in self.values])


def predict_segments(
    model: nn.Module, head: nn.Module, dataset: Dataset, *, batch_size: int = 32, frozen_tokens: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predictions, labels)``, each ``(videos, T)``, of an AVEL model over a whole dataset
    (one :func:`avpet_core.evaluation.predict` pass, in the dataset's order, eval mode). With
    ``frozen_tokens`` the model's streams without adapters are read from
    :func:`~avpet_core.models.frozen_tokens.with_frozen_tokens` (computed once per dataset)."""
    device = next(head.parameters()).device
    if frozen_tokens:
        dataset = with_frozen_tokens(model, dataset)
    predictions, batches = predict(
        lambda batch: head.predict(head(run_streams(model, batch), batch)),
        (model, head),
        dataset,
        batch_size=batch_size,
        device=device,
    )
    return predictions, torch.cat([b["labels"] for b in batches])


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts; row = true label, column = predicted label."""
    predictions, labels = predictions.flatten().long(), labels.flatten().long()
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.numel()} predictions for {labels.numel()} labels")
    for name, values in (("prediction", predictions), ("label", labels)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"a {name} lies outside [0, {num_classes}): {values.min().item()}..{values.max().item()}")
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).view(num_classes, num_classes)


def silent_audio_image(fbank: FbankConfig, seconds: float = 1.0) -> torch.Tensor:
    """The spectrogram image ``(3, mel, frames)`` of ``seconds`` of digital silence under ``fbank``."""
    return audio_to_image(torch.zeros(int(round(seconds * fbank.sample_rate))), fbank.sample_rate, fbank)


MODALITY_CONTROLS = ("none", "silence", "blank")


class ModalityControl(Dataset):
    """``dataset`` with one modality removed: ``"silence"`` replaces every segment's spectrogram by
    that of silence, ``"blank"`` every frame by a black image, ``"none"`` changes nothing.

    Args:
        dataset: an AVEL dataset (items with ``frames``, ``audio``, ``labels``).
        remove: ``"none"``, ``"silence"`` or ``"blank"``.
        fbank: the spectrogram settings the dataset's audio was made with (needed for silence;
            :class:`~avpet_core.data.synthetic.SynthAVE` carries it in ``config.fbank``,
            :class:`~avpet_core.data.ave.AVE` in ``media.fbank``; either is found).
    """

    def __init__(self, dataset: Dataset, remove: str, fbank: FbankConfig | None = None):
        if remove not in MODALITY_CONTROLS:
            raise ValueError(f"remove must be one of {MODALITY_CONTROLS}, got {remove!r}")
        if remove == "silence" and fbank is None:  # SynthAVE keeps it in .config, AVE in .media
            fbank = getattr(getattr(dataset, "config", getattr(dataset, "media", None)), "fbank", None)
            if fbank is None:
                raise ValueError("replacing the audio by silence needs the dataset's FbankConfig (fbank=...)")
        self.dataset, self.remove = dataset, remove
        self.silence = silent_audio_image(fbank) if remove == "silence" else None
        for name in ("num_classes", "background_index", "class_names"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        if self.remove == "silence":
            item["audio"] = self.silence[:1].expand_as(item["audio"]).clone()  # channels are copies
        elif self.remove == "blank":
            item["frames"] = torch.zeros_like(item["frames"])
        return item


def modality_controls(results, test_set: Dataset, controls: dict[str, str]) -> tuple[dict, dict]:
    """Every trained AVEL run of a seed study (``results[name][seed]``, as
    :func:`avpet_core.experiments.run_over_seeds` returns them) evaluated again on ``test_set`` under
    each control (``{label: remove}``, ``remove`` one of :class:`ModalityControl`'s; ``"none"`` leaves
    the clip intact).

    Returns ``(accuracy, predictions)``: ``accuracy[f"{name}, {label}"][seed]`` the segment accuracy,
    one row per run and control, ready for :func:`avpet_core.stats.seed_frame`; and
    ``predictions[name, label]`` = ``(predictions, labels)`` of each run's first seed. The intact
    accuracy of a run's other seeds is its own test accuracy (the same test split, unchanged)."""
    accuracy: dict[str, dict[int, float]] = {}
    predictions: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    controlled = {remove: ModalityControl(test_set, remove) for remove in controls.values()}  # one per control:
    # the frozen streams' tokens under it are computed once for every run (avpet_core.models.frozen_tokens)
    for name, by_seed in results.items():
        first = next(iter(by_seed))
        for seed, run in by_seed.items():
            for label, remove in controls.items():
                row = accuracy.setdefault(f"{name}, {label}", {})
                if remove == "none" and seed != first:
                    row[seed] = run.test["accuracy"]
                    continue
                predicted, labels = predict_segments(run.model, run.head, controlled[remove])
                row[seed] = (predicted == labels).float().mean().item()
                if seed == first:
                    predictions[name, label] = (predicted, labels)
    return accuracy, predictions


def accuracy_by_kind(predictions: torch.Tensor, labels: torch.Tensor, kinds: torch.Tensor) -> dict[str, float]:
    """Segment accuracy split by SynthAVE's segment kinds (``dataset.plan(i).kinds`` stacked).

    An event needs both modalities: ``visible_silent`` and ``audible_offscreen`` segments are
    background that one modality alone mistakes for the event, so their accuracies show which
    modality a model actually uses. Kinds with no segment are left out.
    """
    if not predictions.shape == labels.shape == kinds.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)}, labels {tuple(labels.shape)} "
            f"and kinds {tuple(kinds.shape)} differ in shape"
        )
    correct = predictions == labels
    return {
        name: correct[kinds == k].float().mean().item() for k, name in enumerate(SEGMENT_KINDS) if (kinds == k).any()
    }


def segment_kinds(dataset: Dataset) -> torch.Tensor:
    """``(videos, T)`` ground-truth segment kinds of a SynthAVE split (from its plans; nothing is rendered)."""
    if not hasattr(dataset, "plan"):
        raise ValueError(f"{type(dataset).__name__} has no ground-truth segment kinds (only SynthAVE has)")
    return torch.stack([dataset.plan(i).kinds for i in range(len(dataset))])


def frame_importance(model: nn.Module, dataset: Dataset, *, batch_size: int = 32) -> torch.Tensor:
    """``(questions, T)``: LSTTA's long-term importance of every frame, averaged over its blocks, for every
    question of a trimodal AVQA dataset (items with ``question_text``; one evaluation pass, eval mode)."""
    device = next(model.parameters()).device

    def importance(batch):
        scores = model(batch["frames"], batch["audio"], batch["question_text"]).importance
        if not scores:
            raise ValueError("the model has no long-term filtering (an LSTTA config with long_term=True)")
        return torch.stack(scores).mean(0)

    scores, _ = predict(
        importance, (model,), dataset, batch_size=batch_size, device=device, drop=("frames", "audio", "question_text")
    )
    return scores


def deciding_mask(dataset) -> torch.Tensor:
    """``(questions, T)`` bool: the segments that decide each question (SynthAVQA's ``deciding_segments``)."""
    segments = dataset.config.num_segments
    mask = torch.zeros(len(dataset), segments, dtype=torch.bool)
    for index in range(len(dataset)):
        mask[index, list(dataset.deciding_segments(index))] = True
    return mask


def deciding_auc(scores: torch.Tensor, deciding: torch.Tensor) -> tuple[float, int]:
    """How well ``scores`` rank the deciding segments above the others, within each question.

    The area under the ROC curve (Mann-Whitney: the chance that a deciding segment outscores a
    non-deciding one of the same question, ties counting one half), pooled over the questions that
    have both kinds of segment; returns ``(auc, questions used)``. 0.5: no preference.
    """
    wins = pairs = 0.0
    used = 0
    for row, mask in zip(scores, deciding):
        positive, negative = row[mask], row[~mask]
        if len(positive) and len(negative):
            difference = positive[:, None] - negative[None, :]
            wins += (difference > 0).sum().item() + 0.5 * (difference == 0).sum().item()
            pairs += difference.numel()
            used += 1
    return (wins / pairs if pairs else float("nan")), used
