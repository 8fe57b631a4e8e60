"""Frozen timm Vision Transformers: weights from a local file, freezing, the patch grid.

Every backbone is built with timm's ``dynamic_img_size=True``: the patch embedding accepts any
input size that is a multiple of the patch size, and the position embeddings are resampled by
timm (bicubic, on the 2-D grid) to the input's patch grid, so a ``128 x 96`` spectrogram goes
through the same model as a ``224 x 224`` frame.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from avpet_core.files import first_line

PAPER_BACKBONES = ("vit_base_patch16_224.augreg_in21k", "vit_large_patch16_224.augreg_in21k")
"""The ImageNet-21k ViTs that AV-PEA and LAVISH use (timm names)."""

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


class BackboneError(ValueError):
    """A backbone cannot be created as asked (unknown name, bad weights file, no network)."""


def create_timm_vit(
    name, pretrained, weights_file, dynamic_img_size, num_classes, timm_kwargs, *, offline_name: str
) -> VisionTransformer:
    """A timm ViT by hub name (``pretrained``: timm downloads it), or from ``weights_file``; ``offline_name``
    is named in the messages as the backbone that needs no network."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(pretrained=True) + [offline_name], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneError(f"unknown backbone {name!r}: timm has no model of that name.{hint}")
    kwargs = dict(num_classes=num_classes, dynamic_img_size=dynamic_img_size, **timm_kwargs)
    download = pretrained and weights_file is None
    try:
        model = timm.create_model(name, pretrained=download, **kwargs)
    except TypeError as err:  # e.g. a CNN, which takes no dynamic_img_size
        raise BackboneError(f"{name} is not a timm VisionTransformer with a CLS token ({first_line(err)})") from err
    except Exception as err:
        if download:  # any download/hub failure: say what to do instead
            raise BackboneError(
                f"could not fetch pretrained weights for {name} ({first_line(err)}). Without network "
                "access, download the weights elsewhere and pass weights_file=PATH, or use "
                f"{offline_name!r} with pretrained=True for the offline backbone."
            ) from err
        raise BackboneError(f"cannot create backbone {name!r}: {first_line(err)}") from err
    if not isinstance(model, VisionTransformer) or model.cls_token is None:
        raise BackboneError(f"{name} is not a timm VisionTransformer with a CLS token")
    if weights_file is not None:
        load_weights(model, weights_file)
    return model


def check_weights_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: weights file not found")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise BackboneError(
            f"{path}: unsupported weights format {path.suffix!r}; use one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``torch.save`` state dict (tensors only) from a local file."""
    path = check_weights_file(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, safetensors header, truncated zip, ...: all mean "not readable"
        raise BackboneError(f"{path}: not a readable weights file ({first_line(err)})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def load_weights(model: VisionTransformer, path: str | Path) -> VisionTransformer:
    """Load a local weights file into ``model``, strictly.

    ``.safetensors`` and ``.pth``/``.pt``/``.bin`` state dicts go through timm's ViT checkpoint filter
    (which converts older layouts and resamples position embeddings to the model's grid), then must
    match the model key for key and shape for shape. The classification head is the one exception:
    a file's head is dropped when the model has none (``num_classes=0``), and a model head that the
    file lacks keeps its initialisation. ``.npz`` files use timm's own big_vision loader.

    Raises :class:`BackboneError` naming the file when it cannot be read or does not fit.
    """
    path = check_weights_file(path)
    if path.suffix == ".npz":
        try:
            model.load_pretrained(str(path))
        except Exception as err:
            raise BackboneError(
                f"{path}: not a readable big_vision .npz checkpoint for this model ({first_line(err)})"
            ) from err
        model.pretrained_cfg = {**model.pretrained_cfg, "file": str(path)}
        return model
    state = read_state_dict(path)
    try:
        state = checkpoint_filter_fn(state, model)
    except Exception as err:
        raise BackboneError(f"{path}: weights do not fit this model ({first_line(err)})") from err
    own = model.state_dict()
    is_head = lambda key: key.startswith("head.")  # noqa: E731
    state = {k: v for k, v in state.items() if k in own or not is_head(k)}
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not is_head(k)]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        details = []
        if mismatched:
            k = mismatched[0]
            details.append(
                f"{len(mismatched)} shape mismatches "
                f"(e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
            )
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise BackboneError(f"{path}: weights do not fit this model: " + "; ".join(details))
    model.load_state_dict(state, strict=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "file": str(path)}  # provenance of the weights
    return model


def freeze_module(module: nn.Module) -> nn.Module:
    """Freeze every parameter of ``module`` (``requires_grad=False``) and return it.

    The module is *not* switched to eval mode: a timm ViT has no batch statistics, and adapters
    inserted later may need train mode (dropout, BatchNorm) while the backbone stays frozen.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def patch_grid(model: VisionTransformer, height: int, width: int) -> tuple[int, int]:
    """The patch grid ``(rows, cols)`` the backbone produces for an input of ``height x width``."""
    ph, pw = model.patch_embed.patch_size
    if height < ph or width < pw:
        raise BackboneError(f"input {height}x{width} is smaller than one {ph}x{pw} patch")
    if height % ph or width % pw:
        raise BackboneError(f"input {height}x{width} is not a whole number of {ph}x{pw} patches; pad or crop it")
    return height // ph, width // pw


def normalise_images(images: torch.Tensor, model: VisionTransformer) -> torch.Tensor:
    """Normalise ``[0, 1]`` RGB images ``(..., 3, H, W)`` with the backbone's own mean and std."""
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"], dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - mean) / std
