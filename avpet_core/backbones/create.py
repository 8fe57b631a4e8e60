"""Backbones by name: the offline micro-ViT or any timm ViT, and the language encoders, with weights
chosen explicitly (:func:`create_backbone`, :func:`create_text_encoder`).

AV-PEA (Radman & Laaksonen, 2024, Sec. 3) runs *one* frozen image ViT twice per sample: on the
video frame and on the audio spectrogram treated as an image. :func:`create_backbone` creates that
ViT. Three sources of weights, chosen explicitly by the caller — nothing is downloaded unless asked:

* ``pretrained=True`` with a timm hub name (e.g. ``vit_base_patch16_224.augreg_in21k``): timm
  downloads the weights. Only where the network allows it (Colab, a workstation).
* ``weights_file=PATH``: a local ``.safetensors``, ``.pth``/``.bin`` or timm/big_vision ``.npz``.
* neither: random initialisation (useful for parameter counting and shape tests).

For the name :data:`~avpet_core.backbones.micro_vit.MICRO_VIT` the book has its own small ViT that
trains on two CPU cores; ``pretrained=True`` then means "pretrain it on procedural images, or load
that pretraining from the cache" (:mod:`avpet_core.backbones.micro_vit`), so the offline default
backbone is, as in the paper, an image model that has never heard audio.
"""

from __future__ import annotations

from pathlib import Path

import torch

from timm.models.vision_transformer import VisionTransformer

from avpet_core.backbones import micro_text, micro_vit
from avpet_core.backbones.micro_vit import MICRO_VIT, build_micro_vit
from avpet_core.backbones.text import (
    KNOWN_CONFIGS,
    MICRO_TEXT,
    HFTextEncoder,
    TextEncoder,
    TextEncoderError,
    close_matches,
    download,
    from_known_config,
    import_transformers,
    known_text_encoders,
    load_local,
)
from avpet_core.backbones.vit import BackboneError, check_weights_file, create_timm_vit, freeze_module, load_weights


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
        weights_file = check_weights_file(weights_file)

    if name == MICRO_VIT:
        if timm_kwargs:
            raise BackboneError(f"the micro-ViT takes no extra timm arguments, got {sorted(timm_kwargs)}")
        if weights_file is not None:
            model = build_micro_vit(num_classes=num_classes, dynamic_img_size=dynamic_img_size)
            load_weights(model, weights_file)
        elif pretrained:
            model = micro_vit.pretrained_micro_vit(dynamic_img_size=dynamic_img_size)
            if num_classes != model.num_classes:
                model.reset_classifier(num_classes)
        else:
            model = build_micro_vit(num_classes=num_classes, dynamic_img_size=dynamic_img_size)
    else:
        model = create_timm_vit(
            name, pretrained, weights_file, dynamic_img_size, num_classes, timm_kwargs, offline_name=MICRO_VIT
        )

    if freeze:
        freeze_module(model)
    return model


def create_text_encoder(
    name: str = MICRO_TEXT,
    *,
    pretrained: bool = False,
    local_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> TextEncoder:
    """Create a frozen :class:`TextEncoder` by name (see the module docstring).

    Args:
        name: ``"micro_text"``, a name of :data:`KNOWN_CONFIGS`, or (with ``pretrained=True``) any
            Hugging Face BERT, RoBERTa or CLIP model name.
        pretrained: micro text: train-or-load its offline pretraining; Hugging Face: download the
            weights and tokenizer (needs the network).
        local_dir: load a Hugging Face model and its tokenizer from this directory instead.
        device: where to build it (``"meta"``: shapes only, no memory, for parameter counts).

    Raises:
        TextEncoderError: unknown name (with close matches), ``transformers`` not installed, a
            directory without a model or tokenizer, a tokenizer that does not fit the model, a
            failed download.
    """
    if name == MICRO_TEXT:
        if local_dir is not None:
            raise TextEncoderError(f"{MICRO_TEXT} is trained offline and takes no local_dir")
        if pretrained:
            encoder = micro_text.pretrained_micro_text()
            return encoder.to(device) if device is not None else encoder
        with torch.device(device or "cpu"):
            return micro_text.build_micro_text_encoder()

    if local_dir is None and not pretrained and name not in KNOWN_CONFIGS:
        raise TextEncoderError(
            f"unknown text encoder {name!r}{close_matches(name)} Known without a download: "
            f"{', '.join(known_text_encoders())}; any other Hugging Face BERT, RoBERTa or CLIP name needs "
            "pretrained=True (downloads) or local_dir=DIR"
        )
    transformers = import_transformers()
    if local_dir is not None:
        model, tokenizer = load_local(transformers, Path(local_dir))
        label = str(local_dir)
    elif pretrained:
        model, tokenizer = download(transformers, name)
        label = name
    else:
        model, tokenizer, label = from_known_config(transformers, name, device), None, name
    encoder = HFTextEncoder(model, tokenizer, name=label)
    return encoder.to(device) if device is not None and str(device) != "meta" else encoder
