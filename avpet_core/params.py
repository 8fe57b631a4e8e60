"""Parameter accounting in the papers' convention.

The papers report three numbers per model: the parameters the method *adds* (adapters), the
parameters that are *trained* (adapters plus task head), and the *frozen* backbone. Here they are
counted from the modules themselves, never typed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model (numbers of scalars, not bytes)."""

    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a fraction of all parameters."""
        return self.trainable / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "trainable_share": self.trainable_share}


def count_parameters(module: nn.Module) -> ParamCounts:
    """Count trainable (``requires_grad``) and frozen parameters, each shared tensor once."""
    trainable = frozen = 0
    for parameter in module.parameters():  # .parameters() already de-duplicates shared tensors
        if parameter.requires_grad:
            trainable += parameter.numel()
        else:
            frozen += parameter.numel()
    return ParamCounts(trainable=trainable, frozen=frozen)


def millions(count: int, digits: int = 2) -> str:
    """``3_843_072 -> '3.84M'``."""
    return f"{count / 1e6:.{digits}f}M"
