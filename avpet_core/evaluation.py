"""One evaluation pass, one accuracy, one linear probe: what every chapter's numbers are made of.

* :func:`batches_of` — a dataset's items in a given order, collated into batches (the training
  loop's batching too, so an evaluation sees the dataset in its own order);
* :func:`predict` — run a forward function over a whole dataset in eval mode without gradients,
  and keep its predictions with the non-media part of every batch (labels, answers, types);
  predictions of one shape per item are concatenated, others (token sequences of several lengths,
  strings) come back as one list entry per item (:func:`gather_predictions`);
* :func:`accuracy` — the share of predictions equal to their labels;
* :func:`linear_probe` — the test accuracy of a logistic regression on frozen features.

Modules evaluated by :func:`predict` are left in eval mode (the training loop switches them back
at the start of each epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate


def batches_of(dataset: Dataset, indices: Sequence[int], size: int):
    """Batches of ``size`` items of ``dataset`` in the order of ``indices`` (the last may be smaller)."""
    for start in range(0, len(indices), size):
        yield default_collate([dataset[i] for i in indices[start : start + size]])


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor on ``device`` (other values as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def predict(
    forward: Callable[[dict], torch.Tensor],
    modules: Iterable[nn.Module],
    dataset: Dataset,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    drop: tuple[str, ...] = ("frames", "audio"),
) -> tuple[torch.Tensor, list[dict]]:
    """``(predictions, batches)`` of ``forward(batch)`` over the whole ``dataset``, in its order.

    ``modules`` are put in eval mode; it runs in inference mode (no gradients, no version counters).
    ``batches`` are the collated batches without the keys in ``drop`` (the media), for the metrics.
    ``predictions`` are gathered by :func:`gather_predictions`.
    """
    device = torch.device(device)
    for module in modules:
        module.eval()
    predictions, kept = [], []
    with torch.inference_mode(), autocast_for(device, bf16):
        for batch in batches_of(dataset, range(len(dataset)), batch_size):
            out = forward(to_device(batch, device))
            predictions.append(out.cpu() if isinstance(out, torch.Tensor) else out)
            kept.append({k: v for k, v in batch.items() if k not in drop})
    return gather_predictions(predictions), kept


def gather_predictions(per_batch: list) -> torch.Tensor | list:
    """One batch's predictions after another: concatenated along the first dimension when every
    batch is a tensor with the same trailing shape (labels, logits, embeddings), else a list with one
    entry per item (a tensor row, a token sequence, a string)."""
    if (
        per_batch
        and all(isinstance(p, torch.Tensor) and p.dim() > 0 for p in per_batch)
        and len({p.shape[1:] for p in per_batch}) == 1
    ):
        return torch.cat(per_batch)
    return [item for batch in per_batch for item in batch]


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``predictions`` equal to ``labels`` (AVE's segment accuracy when both are ``(B, T)``)."""
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")
    return (predictions == labels).float().mean().item()


PROBE_SOLVERS = ("adam", "lbfgs")


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
    solver: str = "adam",
) -> float:
    """Test accuracy of a logistic regression on standardised frozen features.

    ``solver="adam"``: ``steps`` full-batch Adam steps at ``lr`` with ``weight_decay`` (chapter 8);
    ``"lbfgs"``: one L-BFGS run of at most ``steps`` iterations on cross-entropy plus
    ``weight_decay * ||W||^2`` (chapter 2; ``lr`` unused). The probe is initialised from ``seed``.
    """
    if solver not in PROBE_SOLVERS:
        raise ValueError(f"unknown probe solver {solver!r}; choose one of {PROBE_SOLVERS}")
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    torch.manual_seed(seed)
    probe = nn.Linear(x_train.shape[1], num_classes)
    if solver == "adam":
        optimiser = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            optimiser.zero_grad()
            F.cross_entropy(probe(x_train), train_labels).backward()
            optimiser.step()
    else:
        optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=steps)

        def closure():
            optimiser.zero_grad()
            loss = F.cross_entropy(probe(x_train), train_labels) + weight_decay * probe.weight.pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
    with torch.no_grad():
        return accuracy(probe(x_test).argmax(1), test_labels)
