"""Checkpoints of what was trained: the few megabytes of adapters (or a model trained end to end) and
the head, never the frozen backbone.

A checkpoint is two files side by side:

* ``NAME.safetensors`` — the trained module's parameters and buffers (e.g. LAVISH's BatchNorm
  statistics) under the model's ``checkpoint_prefix`` (``adapters.*`` for the frozen-encoder models,
  :class:`~avpet_core.models.base.FrozenEncodersModel`: the dual-stream ViT and the trimodal model;
  ``model.*`` for a model trained end to end), and the task head's under ``head.*`` when there is one;
* ``NAME.json`` — what they fit: the model's ``signature()`` (for a dual-stream ViT: the
  backbone's architecture — name, width, depth, heads, patch — the adapter config and the adapted
  streams), the head's config if the caller gives one, and free metadata (epoch, metrics, ...).

The model follows :class:`avpet_core.models.base.TrainableModel`: no attribute is probed here.

Both are written atomically (a reader sees the old file or the whole new one; an interrupted save
leaves no torn file). Loading first compares the JSON with the model it is loaded into and refuses,
naming both sides, when the backbone or the adapters differ; then the tensors are loaded strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

import avpet_core
from avpet_core.files import atomic_write_bytes
from avpet_core.models.base import TrainableModel, check_trainable

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be written, read, or loaded into the given model."""


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(tensors, config)`` paths for a checkpoint named ``path`` (with or without ``.safetensors``)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def model_signature(model: TrainableModel) -> dict:
    """What the trained tensors fit (the model's ``signature()``, JSON-normalised: tuples become lists)."""
    return json.loads(json.dumps(check_trainable(model, "checkpoint").signature()))


def _trained_state(model: TrainableModel, head: nn.Module | None) -> dict[str, torch.Tensor]:
    prefix = model.checkpoint_prefix
    state = {f"{prefix}.{k}": v for k, v in model.trained_module().state_dict().items()}
    if head is not None:
        state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_trained(
    path: str | Path,
    model,
    head: nn.Module | None = None,
    *,
    head_config: dict | None = None,
    metadata: dict | None = None,
) -> tuple[Path, Path]:
    """Save what ``model`` trains — its ``trained_module()``: the adapters, or the whole model when it is
    trained end to end — and the head; returns the two paths written.

    Raises:
        CheckpointError: the directory cannot be written, or ``metadata`` is not JSON-serialisable.
    """
    tensors_path, config_path = checkpoint_paths(path)
    config = {
        "format": FORMAT_VERSION,
        "avpet_core": avpet_core.__version__,
        **model_signature(model),
        "head": head_config if head is not None else None,
        "has_head": head is not None,
        "metadata": metadata or {},
    }
    try:
        config_bytes = json.dumps(config, indent=2, sort_keys=True).encode()
    except TypeError as err:
        raise CheckpointError(f"{config_path}: metadata is not JSON-serialisable ({err})") from err
    tensors = safetensors.torch.save(_trained_state(model, head))
    try:
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(tensors_path, tensors)
        atomic_write_bytes(config_path, config_bytes)
    except OSError as err:
        raise CheckpointError(f"{tensors_path}: cannot write the checkpoint ({err.strerror or err})") from err
    return tensors_path, config_path


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config, tensors)`` of a checkpoint, with a clear error for missing or corrupt files."""
    tensors_path, config_path = checkpoint_paths(path)
    for file in (config_path, tensors_path):
        if not file.is_file():
            raise CheckpointError(f"{file}: checkpoint file not found")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        line = f" line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise CheckpointError(f"{config_path}{line}: not a valid checkpoint config ({err})") from err
    missing = [key for key in ("format", "has_head") if key not in config]
    if missing:
        raise CheckpointError(f"{config_path}: checkpoint config lacks {missing}")
    try:
        tensors = safetensors.torch.load_file(tensors_path)
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{tensors_path}: cannot read the checkpoint tensors ({err})") from err
    return config, tensors


def load_trained(path: str | Path, model, head: nn.Module | None = None) -> dict:
    """Load a checkpoint into ``model`` (and ``head``); returns the checkpoint's config.

    Raises:
        CheckpointError: the files are missing or corrupt; the checkpoint was saved for another
            backbone, adapter config or stream placement (the message names both); a head is
            expected but absent or the other way round; tensors do not fit.
    """
    config, tensors = read_checkpoint(path)
    tensors_path = checkpoint_paths(path)[0]
    current = model_signature(model)
    saved = {k: config.get(k) for k in current}
    if saved != current:
        raise CheckpointError(
            f"{tensors_path}: checkpoint does not fit this model: it was saved for {model.describe_signature(saved)}; "
            f"this model has {model.describe_signature(current)}"
        )
    if config["has_head"] != (head is not None):
        raise CheckpointError(
            f"{tensors_path}: checkpoint {'has' if config['has_head'] else 'has no'} head weights, "
            f"but {'a head was' if head is not None else 'no head was'} given to load them into"
        )
    prefix = f"{model.checkpoint_prefix}."
    trained_state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    _load_strict(model.trained_module(), trained_state, tensors_path, model.checkpoint_prefix)
    if head is not None:
        head_state = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        _load_strict(head, head_state, tensors_path, "head")
    return config


def _load_strict(module: nn.Module, state: dict, path: Path, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"{path}: {what} tensors do not fit ({details})")
    module.load_state_dict(state, strict=True)
