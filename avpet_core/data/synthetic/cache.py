"""Synthetic splits cached on disk, so that repeated commands and chapters do not render them again.

A split's rendered media (SynthAVE: frames, filterbanks and labels; SynthAVQA: each scene's frames
and filterbanks) is one file under :func:`data_cache_dir`, named by the dataset, a hash of its
whole config, the numeric environment (:func:`avpet_core.reproducibility.environment_key`: the
filterbank's last bits depend on the CPU code paths, so a split made without the book's pins is
never read by a pinned run) and the split. It is written atomically, read memory-mapped (pages
are shared by every DataLoader worker), and checked when read. Rendering a split can use worker
processes (``num_workers``): every item has its own generator, so the file is the same bytes.

``$AVPET_DATA_CACHE=off`` turns the cache of :func:`use_disk_cache` off (the splits then render
into memory as they are read, as before).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from avpet_core.data.media import DatasetFormatError
from avpet_core.files import atomic_write_bytes, cache_dir, config_hash, ensure_writable
from avpet_core.reproducibility import environment_key

DATA_CACHE_ENV_VAR = "AVPET_DATA_CACHE"
"""Set to ``off`` (or ``0``) to keep synthetic splits out of the disk cache."""


def data_cache_dir() -> Path:
    """Where synthetic splits are cached: ``data/`` under :func:`avpet_core.files.cache_dir`."""
    return cache_dir() / "data"


def disk_cache_enabled() -> bool:
    return os.environ.get(DATA_CACHE_ENV_VAR, "on").strip().lower() not in ("off", "0", "no", "false")


def config_key(config) -> str:
    """A short hash of every field of a (dataclass) config (:func:`~avpet_core.files.config_hash`)."""
    return config_hash(config)


def split_cache_path(directory: str | Path, dataset: str, key: str, split: str) -> Path:
    """``{directory}/{dataset}-{key}-{environment}-{split}.pt``."""
    return Path(directory) / f"{dataset}-{key}-{environment_key()}-{split}.pt"


def save_split(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    ensure_writable(path.parent)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_split(path: Path, names: tuple[str, ...], finite: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of a cached split, memory-mapped; a clear error for a damaged or foreign file."""
    regenerate = "delete it to regenerate"
    try:
        stored = torch.load(path, weights_only=True, mmap=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise DatasetFormatError(f"{path}: unreadable dataset cache ({type(err).__name__}); {regenerate}") from err
    if not isinstance(stored, dict):
        raise DatasetFormatError(f"{path}: not a dataset cache; {regenerate}")
    for name in names:
        if name not in stored:
            raise DatasetFormatError(f"{path}: dataset cache lacks {name!r}; {regenerate}")
    for name in finite:
        if not torch.isfinite(stored[name].float()).all():
            raise DatasetFormatError(f"{path}: NaN or infinite values in the cached audio features; {regenerate}")
    return stored


class _Items(Dataset):
    def __init__(self, make: Callable[[int], dict], count: int):
        self.make, self.count = make, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return self.make(index)


def render_items(make: Callable[[int], dict], count: int, num_workers: int = 0) -> list[dict]:
    """``[make(0), ..., make(count - 1)]``, in order; with ``num_workers`` processes when > 0.

    ``make`` must draw only from its own generators (every synthetic item does). The loader gets
    its own generator, so rendering leaves the global RNG alone.
    """
    if num_workers <= 0 or count < 2:
        return [make(i) for i in range(count)]
    loader = DataLoader(
        _Items(make, count),
        batch_size=None,
        num_workers=min(num_workers, count),
        generator=torch.Generator().manual_seed(0),
        prefetch_factor=4,
    )
    return list(loader)


def use_disk_cache(dataset, directory: str | Path | None = None, num_workers: int = 0):
    """``dataset`` with its split on disk, if it is a synthetic split that can be (else as it is).

    SynthAVE and SynthAVQA splits provide ``use_disk_cache(directory, num_workers)``; others (AVE,
    MUSIC-AVQA, which read their own files) pass through. Nothing happens when
    ``$AVPET_DATA_CACHE`` is ``off``.
    """
    if not disk_cache_enabled() or not hasattr(dataset, "use_disk_cache"):
        return dataset
    return dataset.use_disk_cache(directory, num_workers=num_workers)
