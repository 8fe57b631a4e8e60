"""Frozen timm Vision Transformers: creation, weights, freezing, and the offline micro-ViT.

AV-PEA (Radman & Laaksonen, 2024, Sec. 3) runs *one* frozen image ViT twice per sample: on the
video frame and on the audio spectrogram treated as an image. This module creates that ViT.

Three sources of weights, chosen explicitly by the caller — nothing is downloaded unless asked:

* ``pretrained=True`` with a timm hub name (e.g. ``vit_base_patch16_224.augreg_in21k``): timm
  downloads the weights. Only where the network allows it (Colab, a workstation).
* ``weights_file=PATH``: a local ``.safetensors``, ``.pth``/``.bin`` or timm/big_vision ``.npz``.
* neither: random initialisation (useful for parameter counting and shape tests).

For the name :data:`MICRO_VIT` the book has its own small ViT that trains on two CPU cores;
``pretrained=True`` then means "pretrain it on procedural images, or load that pretraining from the
cache" (see :mod:`avpet_core.pretrain`), so the offline default backbone is, as in the paper, an
image model that has never heard audio.

Every backbone is built with timm's ``dynamic_img_size=True``: the patch embedding accepts any
input size that is a multiple of the patch size, and the position embeddings are resampled by
timm (bicubic, on the 2-D grid) to the input's patch grid, so a ``128 x 96`` spectrogram goes
through the same model as a ``224 x 224`` frame.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

MICRO_VIT = "micro_vit"
"""Name of the book's offline backbone: a 4-block, 96-dimensional ViT on 48 x 48 images (8 x 8 patches)."""

PAPER_BACKBONES = ("vit_base_patch16_224.augreg_in21k", "vit_large_patch16_224.augreg_in21k")
"""The ImageNet-21k ViTs that AV-PEA and LAVISH use (timm names)."""

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


class BackboneError(ValueError):
    """A backbone cannot be created as asked (unknown name, bad weights file, no network)."""


@dataclass(frozen=True)
class MicroViTConfig:
    """Architecture of the micro-ViT: small enough to pretrain in about two minutes on two CPU cores.

    The blocks are timm's own ``Block`` (the same class ViT-B/16 uses), so everything the book
    builds on the micro-ViT runs unchanged on the paper's backbones.
    """

    img_size: int = 48
    patch_size: int = 8
    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 2.0

    # Pixel normalisation, as in the augreg ImageNet-21k ViTs: (x - 0.5) / 0.5.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def vit_kwargs(self) -> dict:
        kwargs = asdict(self)
        del kwargs["mean"], kwargs["std"]
        return kwargs


def build_micro_vit(
    config: MicroViTConfig = MicroViTConfig(), *, num_classes: int = 0, dynamic_img_size: bool = True
) -> VisionTransformer:
    """A randomly initialised micro-ViT (timm ``VisionTransformer``), with a timm-style ``pretrained_cfg``."""
    model = VisionTransformer(
        num_classes=num_classes, dynamic_img_size=dynamic_img_size, **config.vit_kwargs()
    )
    model.pretrained_cfg = {
        "architecture": MICRO_VIT,
        "input_size": (3, config.img_size, config.img_size),
        "mean": config.mean,
        "std": config.std,
        "num_classes": num_classes,
    }
    return model


def create_backbone(
    name: str = MICRO_VIT,
    *,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    freeze: bool = True,
    dynamic_img_size: bool = True,
    num_classes: int = 0,
    **timm_kwargs,
) -> VisionTransformer:
    """Create a ViT backbone by name.

    Args:
        name: :data:`MICRO_VIT` or any timm ViT name with a CLS token, e.g.
            ``"vit_base_patch16_224.augreg_in21k"``.
        pretrained: for a timm name, download timm's weights (needs the network); for the
            micro-ViT, train-or-load the offline pretraining (no network).
        weights_file: load weights from this local file instead (``pretrained`` is then ignored).
        freeze: set ``requires_grad=False`` on every parameter (see :func:`freeze`).
        dynamic_img_size: accept inputs of any size (spectrograms); timm resamples the position
            embeddings to the input's patch grid.
        num_classes: size of the classification head; ``0`` (default) means no head, the
            forward pass returns pooled features.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Raises:
        BackboneError: unknown name, missing or unreadable weights file, weights that do not fit the
            architecture, or a download that failed.
    """
    if weights_file is not None:
        weights_file = _check_weights_file(weights_file)

    if name == MICRO_VIT:
        if timm_kwargs:
            raise BackboneError(f"the micro-ViT takes no extra timm arguments, got {sorted(timm_kwargs)}")
        if weights_file is not None:
            model = build_micro_vit(num_classes=num_classes, dynamic_img_size=dynamic_img_size)
            load_weights(model, weights_file)
        elif pretrained:
            from avpet_core.pretrain import pretrained_micro_vit

            model = pretrained_micro_vit(dynamic_img_size=dynamic_img_size)
            if num_classes != model.num_classes:
                model.reset_classifier(num_classes)
        else:
            model = build_micro_vit(num_classes=num_classes, dynamic_img_size=dynamic_img_size)
    else:
        model = _create_timm_vit(name, pretrained, weights_file, dynamic_img_size, num_classes, timm_kwargs)

    if freeze:
        freeze_module(model)
    return model


def _create_timm_vit(name, pretrained, weights_file, dynamic_img_size, num_classes, timm_kwargs) -> VisionTransformer:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(pretrained=True) + [MICRO_VIT], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneError(f"unknown backbone {name!r}: timm has no model of that name.{hint}")
    kwargs = dict(num_classes=num_classes, dynamic_img_size=dynamic_img_size, **timm_kwargs)
    download = pretrained and weights_file is None
    try:
        model = timm.create_model(name, pretrained=download, **kwargs)
    except TypeError as err:  # e.g. a CNN, which takes no dynamic_img_size
        raise BackboneError(f"{name} is not a timm VisionTransformer with a CLS token ({_first_line(err)})") from err
    except Exception as err:
        if download:  # any download/hub failure: say what to do instead
            raise BackboneError(
                f"could not fetch pretrained weights for {name} ({_first_line(err)}). Without network "
                "access, download the weights elsewhere and pass weights_file=PATH, or use "
                f"{MICRO_VIT!r} with pretrained=True for the offline backbone."
            ) from err
        raise BackboneError(f"cannot create backbone {name!r}: {_first_line(err)}") from err
    if not isinstance(model, VisionTransformer) or model.cls_token is None:
        raise BackboneError(f"{name} is not a timm VisionTransformer with a CLS token")
    if weights_file is not None:
        load_weights(model, weights_file)
    return model


def _check_weights_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: weights file not found")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise BackboneError(f"{path}: unsupported weights format {path.suffix!r}; use one of {', '.join(WEIGHT_SUFFIXES)}")
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``torch.save`` state dict (tensors only) from a local file."""
    path = _check_weights_file(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, safetensors header, truncated zip, ...: all mean "not readable"
        raise BackboneError(f"{path}: not a readable weights file ({_first_line(err)})") from err
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
    path = _check_weights_file(path)
    if path.suffix == ".npz":
        try:
            model.load_pretrained(str(path))
        except Exception as err:
            raise BackboneError(f"{path}: not a readable big_vision .npz checkpoint for this model ({_first_line(err)})") from err
        model.pretrained_cfg = {**model.pretrained_cfg, "file": str(path)}
        return model
    state = read_state_dict(path)
    try:
        state = checkpoint_filter_fn(state, model)
    except Exception as err:
        raise BackboneError(f"{path}: weights do not fit this model ({_first_line(err)})") from err
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
            details.append(f"{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
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
