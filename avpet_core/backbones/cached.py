"""The train-or-load cache of the book's pretrained backbones: the micro-ViT (:mod:`.micro_vit`) and
the micro text encoder (:mod:`.micro_text`).

A pretraining is run once and kept in ``$AVPET_CACHE_DIR`` (default ``~/.cache/avpet``,
:func:`avpet_core.files.cache_dir`) as two files named by its configuration (:func:`cache_paths`):

* ``{name}-{key}.safetensors`` — the trained weights, the key in the header (``config_key``);
* ``{name}-{key}.json`` — the training record (accuracy, history, seconds, numeric environment,
  configuration).

``name`` is the configuration's ``cache_name`` (``micro_vit``, ``micro_text``) and ``key`` its
``key()``, a :func:`pretraining_key`: a hash of every setting and of the numeric environment
(:func:`avpet_core.reproducibility.environment_key`), so changing any setting trains a new model
rather than loading a stale one, and a model trained under other CPU code paths is never loaded
by a pinned run.

:func:`train_or_load` trains and writes both files when either is missing (or when asked to
retrain), and otherwise reads them. Either way the model it returns is loaded from the weights
file, so a fresh run and a cached run give the same model. A record that cannot be read raises
:class:`~avpet_core.files.CacheError`, weights that cannot be read or do not fit
:class:`~avpet_core.backbones.vit.BackboneError`; both name the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, ClassVar, Protocol

from safetensors.torch import load_file, save
from torch import nn

from avpet_core.backbones.vit import BackboneError
from avpet_core.files import CacheError, atomic_write_bytes, cache_dir, config_hash, ensure_writable, first_line
from avpet_core.reproducibility import environment_key


class PretrainingConfig(Protocol):
    """What the cache needs of a pretraining configuration (a frozen dataclass)."""

    cache_name: ClassVar[str]  # the first part of its files' names

    def key(self) -> str: ...


def pretraining_key(config, **extra) -> str:
    """The cache key of a pretraining: :func:`~avpet_core.files.config_hash` of every field of
    ``config``, of ``extra`` (e.g. the hash of a vocabulary) and of the numeric environment."""
    return config_hash({**asdict(config), **extra, "numeric_environment": environment_key()})


def cache_paths(config: PretrainingConfig, directory: Path | None = None) -> tuple[Path, Path]:
    """``(weights, record)`` paths of the cached pretraining for ``config`` (in :func:`cache_dir` by default)."""
    directory = directory or cache_dir()
    stem = f"{config.cache_name}-{config.key()}"
    return directory / f"{stem}.safetensors", directory / f"{stem}.json"


def write_pretraining(weights_path: Path, record_path: Path, model: nn.Module, record: dict, key: str) -> dict:
    """Write ``model``'s weights (``key`` in the header) and ``record`` to the cache files, each
    atomically; returns the record as a cache hit reads it (plain JSON)."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(weights_path, save(state, metadata={"config_key": key}))
    atomic_write_bytes(record_path, json.dumps(record, indent=2).encode())
    return json.loads(json.dumps(record))


def read_record(path: Path) -> dict:
    """The training record cached at ``path``; :class:`CacheError` naming it when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CacheError(f"{path}: unreadable pretraining record ({err}); delete it to retrain") from err


def load_cached_weights(model: nn.Module, path: Path, name: str) -> nn.Module:
    """Load the cached weights at ``path`` into ``model``, strictly (every key, every shape).

    Raises :class:`BackboneError` naming the file when it is not a readable safetensors file or
    does not fit ``model`` (``name`` says which model, e.g. ``micro_vit``).
    """
    try:
        state = load_file(str(path))
    except Exception as err:  # a torn or foreign file: safetensors raises several types
        raise BackboneError(f"{path}: not a readable weights file ({first_line(err)})") from err
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        raise BackboneError(
            f"{path}: weights do not fit {name} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shape {mismatched[:3]}); delete it to retrain"
        )
    model.load_state_dict(state)
    return model


def train_or_load(
    config: PretrainingConfig,
    train: Callable[[], tuple[nn.Module, dict]],
    build: Callable[[], nn.Module],
    *,
    retrain: bool = False,
) -> nn.Module:
    """The pretrained model of ``config``: loaded from the cache, or trained and cached now.

    Args:
        train: runs the pretraining, returning ``(model, record)``; called on a cache miss or with
            ``retrain``, after the cache directory was found writable.
        build: a model of the right architecture, which the cached weights are loaded into.
        retrain: train (and overwrite the cache) even if the files are there.

    Returns the model in eval mode, ``model.pretraining`` holding the record.
    """
    weights_path, record_path = cache_paths(config)
    if retrain or not (weights_path.is_file() and record_path.is_file()):
        ensure_writable(weights_path.parent)  # fail before spending a minute training
        trained, record = train()
        record = write_pretraining(weights_path, record_path, trained, record, config.key())
    else:
        record = read_record(record_path)
    # Both branches load from the file, so a fresh run and a cached run give the same model.
    model = load_cached_weights(build(), weights_path, config.cache_name)
    model.eval()
    model.pretraining = record
    return model
