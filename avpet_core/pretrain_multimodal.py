"""Self-supervised pretraining of :class:`~avpet_core.models.shared_lowrank.SharedMultimodalTransformer`
and its evaluation on SynthAVE video classification — a minimal loop, CNNs and Transformers end to end.

Pretraining (labels unused) optimises two losses on every batch:

* **masked embedding prediction (MEP)** — a fraction of each modality's segment embeddings is
  replaced by a learned mask token before the Transformers; the final token at a masked position,
  through a linear head, must pick the embedding it replaced out of ``num_negatives + 1``
  candidates (InfoNCE over cosine similarities). Candidates are the same modality's segment
  embeddings in the batch.
* **correct-pair prediction** — in half of the batch each video's audio is swapped for another
  video's; a linear head on the two summary tokens predicts whether audio and video belong
  together (binary cross-entropy).

Negatives for MEP are drawn either **content-aware** — from the CNN embedding space, with
probability proportional to ``exp(cos(target, candidate) / sampling_temperature)`` so that
segments that *look or sound alike* are preferred (hard negatives) — or uniformly at **random**,
the comparison. Sampling never picks the positive itself.

Evaluation: the video label is the event class of the video if any of its segments is an event,
else background (SynthAVE's last label, so ``labels.min()`` over the segments). A **linear probe**
fits a logistic regression on the frozen summary features; **fine-tuning** trains the whole model
(stems included) with a linear head. :func:`training_memory` reports what one training step needs:
parameters, gradients and Adam's two moments (4 bytes each), plus the activations autograd saves for
the backward pass, counted exactly with ``torch.autograd.graph.saved_tensors_hooks`` (each storage
once, parameters excluded) — deterministic, and the same on any device.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig
from avpet_core.models.shared_lowrank import SharedMultimodalTransformer

NEGATIVE_SAMPLING = ("content", "random")


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


@dataclass(frozen=True)
class MultimodalPretrainConfig:
    """Pretraining hyper-parameters (CPU defaults: tens of steps)."""

    steps: int = 60
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    mask_prob: float = 0.25
    num_negatives: int = 16
    negatives: str = "content"
    temperature: float = 0.1
    sampling_temperature: float = 0.1
    pair_weight: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.negatives not in NEGATIVE_SAMPLING:
            raise ValueError(f"negatives must be one of {NEGATIVE_SAMPLING}, got {self.negatives!r}")


class PretrainHeads(nn.Module):
    """MEP prediction heads (one per modality) and the correct-pair classifier."""

    def __init__(self, dim: int):
        super().__init__()
        self.predict_visual, self.predict_audio = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.pair = nn.Linear(2 * dim, 1)


def sample_negatives(targets: torch.Tensor, positives: torch.Tensor, pool: torch.Tensor, k: int, mode: str,
                     temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Indices ``(n, k)`` into ``pool`` ``(m, D)`` of negatives for ``targets`` ``(n, D)``, never ``positives``.

    ``mode="content"``: probability ``∝ exp(cos(target, candidate) / temperature)`` in the
    (detached) CNN embedding space; ``mode="random"``: uniform.
    """
    n, m = targets.shape[0], pool.shape[0]
    k = min(k, m - 1)
    if mode == "content":
        similarity = F.normalize(targets.detach(), dim=-1) @ F.normalize(pool.detach(), dim=-1).T
        logits = similarity / temperature
    elif mode == "random":
        logits = torch.zeros(n, m)
    else:
        raise ValueError(f"unknown negative sampling {mode!r}")
    logits = logits.float().masked_fill(F.one_hot(positives, m).bool(), float("-inf"))
    probs = torch.softmax(logits - logits.max(dim=-1, keepdim=True).values, dim=-1)
    return torch.multinomial(probs, k, replacement=False, generator=generator)


def info_nce(predictions: torch.Tensor, pool: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """InfoNCE: each prediction must pick ``pool[positive]`` among it and ``pool[negatives]`` (cosine / T)."""
    candidates = pool[torch.cat([positives.unsqueeze(1), negatives], dim=1)]  # (n, k + 1, D)
    logits = torch.einsum("nd,nkd->nk", F.normalize(predictions, dim=-1), F.normalize(candidates, dim=-1)) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


def pretraining_losses(model: SharedMultimodalTransformer, heads: PretrainHeads, frames: torch.Tensor, audio: torch.Tensor,
                       config: MultimodalPretrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """MEP (visual, audio) and correct-pair losses of one batch, and the pair accuracy."""
    visual, sound = model.embed(frames, audio)
    b, t, d = visual.shape
    # correct-pair prediction: the first half keeps its audio, the second half gets another video's
    half = b // 2
    order = torch.arange(b)
    order[half:] = half + (torch.arange(b - half) + 1) % (b - half) if b - half > 1 else order[half:]
    sound = sound[order]
    matched = (order == torch.arange(b)).float()
    masks = [torch.rand(b, t, generator=generator) < config.mask_prob for _ in range(2)]
    for mask in masks:
        if not mask.any():
            mask[0, 0] = True
    output = model.encode(visual, sound, masks[0], masks[1])
    losses = {}
    for name, embeddings, tokens, mask, head in (
        ("mep_visual", visual, output.visual, masks[0], heads.predict_visual),
        ("mep_audio", sound, output.audio, masks[1], heads.predict_audio),
    ):
        pool = embeddings.reshape(b * t, d)
        positives = mask.flatten().nonzero().squeeze(1)
        negatives = sample_negatives(pool[positives], positives, pool, config.num_negatives, config.negatives,
                                     config.sampling_temperature, generator)
        losses[name] = info_nce(head(tokens[mask]), pool, positives, negatives, config.temperature)
    pair_logits = heads.pair(output.summary).squeeze(1)
    losses["pair"] = F.binary_cross_entropy_with_logits(pair_logits, matched)
    losses["pair_accuracy"] = ((pair_logits > 0).float() == matched).float().mean().detach()
    losses["total"] = losses["mep_visual"] + losses["mep_audio"] + config.pair_weight * losses["pair"]
    return losses


def pretrain(model: SharedMultimodalTransformer, videos: VideoTensors, config: MultimodalPretrainConfig = MultimodalPretrainConfig(),
             device: str | torch.device = "cpu") -> dict[str, list[float]]:
    """Pretrain ``model`` in place (labels unused); returns the per-step history of every loss."""
    generator = torch.Generator().manual_seed(config.seed)
    heads = PretrainHeads(model.config.dim).to(device)
    model.to(device).train()
    parameters = list(model.parameters()) + list(heads.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / max(1, config.steps // 10)))
    history: dict[str, list[float]] = {}
    for _ in range(config.steps):
        index = torch.randperm(len(videos), generator=generator)[: config.batch_size]
        frames, audio = (x.to(device) for x in videos.batch(index))
        losses = pretraining_losses(model, heads, frames, audio, config, generator)
        optimiser.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        schedule.step()
        for name, value in losses.items():
            history.setdefault(name, []).append(value.item())
    return history


# ---------------------------------------------------------------------------------------------
# Evaluation: linear probe and fine-tuning on video classification.
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def extract_features(model: SharedMultimodalTransformer, videos: VideoTensors, batch_size: int = 50,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """The summary features ``(N, 2 D)`` of every video (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    features = [model(*(x.to(device) for x in videos.batch(torch.arange(i, min(i + batch_size, len(videos)))))).summary.cpu()
                for i in range(0, len(videos), batch_size)]
    model.train(was_training)
    return torch.cat(features)


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, steps: int = 300, lr: float = 0.05,
                 weight_decay: float = 1e-3, seed: int = 0) -> float:
    """Test accuracy of a logistic regression on standardised frozen features (full-batch Adam)."""
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    torch.manual_seed(seed)
    probe = nn.Linear(x_train.shape[1], num_classes)
    optimiser = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(probe(x_train), train_labels).backward()
        optimiser.step()
    with torch.no_grad():
        return (probe(x_test).argmax(1) == test_labels).float().mean().item()


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0


class VideoClassifier(nn.Module):
    """The multimodal Transformer and a linear head on its summary tokens."""

    def __init__(self, model: SharedMultimodalTransformer, num_classes: int):
        super().__init__()
        self.model, self.head = model, nn.Linear(2 * model.config.dim, num_classes)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(frames, audio).summary)


def finetune(model: SharedMultimodalTransformer, videos: VideoTensors, config: FinetuneConfig = FinetuneConfig(),
             device: str | torch.device = "cpu") -> tuple[VideoClassifier, list[float]]:
    """Fine-tune a copy of ``model`` end to end (stems, Transformers and head); returns it and its losses."""
    torch.manual_seed(config.seed)
    classifier = VideoClassifier(copy.deepcopy(model), videos.num_classes).to(device).train()
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(classifier.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / max(1, config.steps // 10)))
    losses = []
    for _ in range(config.steps):
        index = torch.randperm(len(videos), generator=generator)[: config.batch_size]
        frames, audio = (x.to(device) for x in videos.batch(index))
        loss = F.cross_entropy(classifier(frames, audio), videos.video_labels[index].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(classifier.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    return classifier, losses


@torch.no_grad()
def accuracy(classifier: VideoClassifier, videos: VideoTensors, batch_size: int = 50, device: str | torch.device = "cpu") -> float:
    classifier.eval()
    correct = 0
    for i in range(0, len(videos), batch_size):
        index = torch.arange(i, min(i + batch_size, len(videos)))
        frames, audio = (x.to(device) for x in videos.batch(index))
        correct += (classifier(frames, audio).argmax(1).cpu() == videos.video_labels[index]).sum().item()
    classifier.train()
    return correct / len(videos)


# ---------------------------------------------------------------------------------------------
# Training memory.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one AdamW training step holds: weights, gradients, the two Adam moments, saved activations."""

    parameters: int
    gradients: int
    optimiser: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimiser + self.activations

    def as_dict(self) -> dict:
        return {"parameters": self.parameters, "gradients": self.gradients, "optimiser": self.optimiser,
                "activations": self.activations, "total": self.total}


def saved_activation_bytes(loss_fn, parameters) -> int:
    """Bytes of the tensors autograd saves for backward while ``loss_fn()`` runs, each storage once,
    parameters (which autograd saves by reference, not by copy) excluded."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in parameters}
    storages: dict[int, int] = {}

    def pack(tensor):
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in parameter_storages:
                storages[key] = storage.nbytes()
        else:  # on the meta device there are no pointers: count every saved tensor by its size
            storages[len(storages) + 2**62] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    return sum(storages.values())


def training_memory(classifier: nn.Module, frames: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor) -> TrainingMemory:
    """What one fine-tuning step of ``classifier`` on this batch holds (float32 weights and AdamW)."""
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    weight_bytes = sum(p.numel() * p.element_size() for p in classifier.parameters())
    trained_bytes = sum(p.numel() * p.element_size() for p in parameters)
    activations = saved_activation_bytes(lambda: F.cross_entropy(classifier(frames, audio), labels), parameters)
    classifier.zero_grad(set_to_none=True)
    return TrainingMemory(parameters=weight_bytes, gradients=trained_bytes, optimiser=2 * trained_bytes, activations=activations)


def mebibytes(count: int) -> float:
    return count / 2**20


__all__ = [
    "NEGATIVE_SAMPLING", "FinetuneConfig", "MultimodalPretrainConfig", "PretrainHeads", "TrainingMemory", "VideoClassifier",
    "VideoTensors", "accuracy", "extract_features", "finetune", "info_nce", "linear_probe", "load_videos", "mebibytes",
    "pretrain", "pretraining_losses", "sample_negatives", "saved_activation_bytes", "training_memory",
]

