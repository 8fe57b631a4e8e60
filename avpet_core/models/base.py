"""What the training loop and the checkpoints need from a model: what trains, and what it fits.

Every model the book trains answers three questions, so that :func:`avpet_core.train.fit` and
:mod:`avpet_core.checkpoints` never probe its attributes:

* :meth:`~TrainableModel.trained_module` — the module whose parameters the optimiser updates and a
  checkpoint keeps: the adapters of a frozen backbone (:class:`~avpet_core.models.DualStreamViT`),
  or the whole model when it is trained end to end (the shared low-rank Transformer);
* :attr:`~TrainableModel.checkpoint_prefix` — the name those tensors go under in a checkpoint
  (``"adapters"``, ``"model"``) and the name of their optimiser group;
* :meth:`~TrainableModel.signature` — a JSON-ready description of everything the trained tensors
  only fit together with (the frozen backbone's architecture, the adapter config, ...), compared
  when a checkpoint is loaded; :meth:`~TrainableModel.describe_signature` words it for errors.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

PROTOCOL_METHODS = ("trained_module", "signature", "describe_signature", "checkpoint_prefix")


@runtime_checkable
class TrainableModel(Protocol):
    """The model side of the training loop (see the module docstring)."""

    checkpoint_prefix: str

    def trained_module(self) -> nn.Module: ...

    def signature(self) -> dict: ...

    def describe_signature(self, signature: dict) -> str: ...


def check_trainable(model, where: str = "") -> TrainableModel:
    """``model`` if it follows :class:`TrainableModel`, else a ``TypeError`` naming what it lacks."""
    missing = [name for name in PROTOCOL_METHODS if not hasattr(model, name)]
    if missing:
        prefix = f"{where}: " if where else ""
        raise TypeError(f"{prefix}{type(model).__name__} is not a trainable model of the book: it lacks {missing} "
                        "(see avpet_core.models.base.TrainableModel)")
    return model
