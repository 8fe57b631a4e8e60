"""What one training step holds in memory, counted exactly (no timing, no allocator statistics).

:func:`training_memory` reports parameters, gradients and Adam's two moments (4 bytes each), plus
the activations autograd saves for the backward pass, counted with
``torch.autograd.graph.saved_tensors_hooks`` (each storage once, parameters excluded) —
deterministic, and the same on any device (chapter 8's memory table).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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
        return {
            "parameters": self.parameters,
            "gradients": self.gradients,
            "optimiser": self.optimiser,
            "activations": self.activations,
            "total": self.total,
        }


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


def training_memory(
    classifier: nn.Module, frames: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor
) -> TrainingMemory:
    """What one fine-tuning step of ``classifier`` on this batch holds (float32 weights and AdamW)."""
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    weight_bytes = sum(p.numel() * p.element_size() for p in classifier.parameters())
    trained_bytes = sum(p.numel() * p.element_size() for p in parameters)
    activations = saved_activation_bytes(lambda: F.cross_entropy(classifier(frames, audio), labels), parameters)
    classifier.zero_grad(set_to_none=True)
    return TrainingMemory(
        parameters=weight_bytes, gradients=trained_bytes, optimiser=2 * trained_bytes, activations=activations
    )


def mebibytes(count: int) -> float:
    return count / 2**20
