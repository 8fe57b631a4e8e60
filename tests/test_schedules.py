"""The warm-up-cosine schedule (avpet_core.schedules): the very floats the book trained with, from a
module that imports nothing of the package."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import avpet_core.schedules
from avpet_core.schedules import warmup_cosine


def test_both_schedule_shapes_keep_their_arithmetic():
    """warmup_cosine gives the very floats of the two schedules it replaced, written out here: the
    loop's (cosine after the warm-up) and the backbones' pretraining (warm-up times a cosine from step 0)."""
    for total in (1, 7, 40, 100, 1200, 2400):
        for fraction in (0.0, 0.1, 0.25):
            warmup = max(1, int(round(total * fraction)))
            for step in range(total + 2):
                progress = (step - warmup) / max(1, total - warmup)
                loop = (step + 1) / warmup if step < warmup else 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
                assert warmup_cosine(step, total, warmup) == loop, (total, fraction, step)
        for warmup in (2, 30, 60):
            for step in range(total + 1):
                pretraining = min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / total))
                assert warmup_cosine(step, total, warmup, decay_during_warmup=True) == pretraining, (total, step)


def test_the_schedules_import_only_math():
    """No import circle: the backbones' pretraining and the training loop both import it."""
    tree = ast.parse(Path(avpet_core.schedules.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"__future__", "math"}
