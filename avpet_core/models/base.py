"""What the training loop and the checkpoints need from a model, and the base of the frozen-encoder models.

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

The models that adapt frozen encoders — the dual-stream ViT (:mod:`.dual_stream`) and the trimodal
model (:mod:`.trimodal`) — share :class:`FrozenEncodersModel`: the frozen encoders stay in eval
mode, the adapters are what trains and what a checkpoint keeps (under ``adapters.*``), and the
sublayer adapters of the ViT streams sit at ``adapters[stream][block][site]``, placed by
:data:`PLACEMENTS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, TypeVar, runtime_checkable

from torch import nn

from avpet_core.adapters import SublayerAdapter, SublayerAdapterConfig

PROTOCOL_METHODS = ("trained_module", "signature", "describe_signature", "checkpoint_prefix")

STREAMS = ("visual", "audio")
"""The ViT streams, the only places sublayer adapters sit."""

PLACEMENTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "audio": ("audio",),
    "visual": ("visual",),
    "both": ("visual", "audio"),
}
"""Which streams carry adapters, by the names of AV-PEA's Table 4 ablation."""


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
        raise TypeError(
            f"{prefix}{type(model).__name__} is not a trainable model of the book: it lacks {missing} "
            "(see avpet_core.models.base.TrainableModel)"
        )
    return model


def check_placement(streams: str, error: type[Exception]) -> str:
    """``streams`` if it names a placement of :data:`PLACEMENTS`, else ``error`` listing them."""
    if streams not in PLACEMENTS:
        raise error(f"unknown stream placement {streams!r}; choose one of {list(PLACEMENTS)}")
    return streams


M = TypeVar("M", bound="FrozenEncodersModel")


class FrozenEncodersModel(nn.Module):
    """Frozen encoders with trained adapters (a :class:`TrainableModel`; see the module docstring).

    A subclass registers its frozen encoders first and ``self.adapters`` (an ``nn.ModuleDict``) after
    them, names the encoders in :meth:`frozen_encoders`, and writes ``signature`` and
    ``describe_signature``. Entries of ``adapters`` that are not a ViT stream (a trimodal model's
    stage blocks, ``adapters["lstta"]``) are no sublayer adapters: :meth:`adapter` never returns them.
    """

    checkpoint_prefix = "adapters"
    adapters: nn.ModuleDict

    def frozen_encoders(self) -> tuple[nn.Module, ...]:
        """The frozen encoders (never trained; always in eval mode)."""
        raise NotImplementedError

    def train(self: M, mode: bool = True) -> M:
        """Adapters follow ``mode``; the frozen encoders always stay in eval mode."""
        super().train(mode)
        for encoder in self.frozen_encoders():
            encoder.eval()
        return self

    def trained_module(self) -> nn.Module:
        """The adapters: the only trained part (the encoders are frozen)."""
        return self.adapters

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters: those of the adapters."""
        return self.adapters.parameters()

    def adapter(self, stream: str, block: int, site: str) -> SublayerAdapter | None:
        """The sublayer adapter of ``stream`` at ``block`` and ``site``, or ``None`` where there is none."""
        if stream not in STREAMS or stream not in self.adapters or site not in self.adapters[stream][block]:
            return None
        return self.adapters[stream][block][site]

    def add_sublayer_adapters(
        self, config: SublayerAdapterConfig, streams: Iterable[str], dims: Mapping[str, int], depth: int
    ) -> None:
        """``adapters[stream][block][site]``: one new adapter of width ``dims[stream]`` per site of ``config``,
        in each of ``depth`` blocks of every stream of ``streams`` (built in that order)."""
        for stream in streams:
            self.adapters[stream] = nn.ModuleList(
                nn.ModuleDict({site: config.build(dims[stream]) for site in config.sites}) for _ in range(depth)
            )
