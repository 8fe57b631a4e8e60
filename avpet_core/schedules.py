"""Learning-rate schedules: :func:`warmup_cosine`, the factor of every training loop in the book
(linear warm-up, cosine decay).

It imports nothing but :mod:`math`, so that the pretraining of the backbones
(:mod:`avpet_core.backbones.micro_vit`, :mod:`avpet_core.backbones.micro_text`) and
:mod:`avpet_core.train` share it without an import circle.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, *, decay_during_warmup: bool = False) -> float:
    """Learning-rate factor at ``step`` of ``total``: a linear warm-up over ``warmup`` steps, and a
    cosine decay to zero.

    By default (:mod:`avpet_core.train`) the cosine starts when the warm-up ends and spans the steps
    left, reaching zero at ``total`` and staying there. With ``decay_during_warmup`` (the backbones'
    pretraining) the cosine spans all ``total`` steps from step 0 and the warm-up ramp multiplies it.
    Each shape keeps its own arithmetic, so the factors are the same floats the book trained with.
    """
    if decay_during_warmup:
        ramp = min(1.0, (step + 1) / warmup)
        return ramp * 0.5 * (1.0 + math.cos(math.pi * step / total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
