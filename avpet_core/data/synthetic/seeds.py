"""Splits, segments, item seeds and uniform draws: what every SynthAVE and SynthAVQA item is made from.

Item ``index`` of ``split`` draws from its own ``torch.Generator``, seeded with :func:`item_seed`
(a hash of the dataset's name, the config's seed, the split and the index), so items can be
generated in any order, by any DataLoader worker, and no two splits or seeds share one.
"""

from __future__ import annotations

import hashlib

import torch

SPLITS = ("train", "val", "test")
NUM_SEGMENTS = 10  # one-second segments of a video, as in AVE


def check_split(split: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def item_seed(seed: int, dataset: str, split: str, index: int) -> int:
    """The seed of item ``index`` of ``split``: a hash, so splits and seeds never share a video."""
    digest = hashlib.blake2b(f"{dataset}/{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    """Uniform draws in ``[lo, hi)`` of ``shape`` (a 0-d tensor when no shape is given)."""
    return lo + (hi - lo) * torch.rand(shape, generator=g)
