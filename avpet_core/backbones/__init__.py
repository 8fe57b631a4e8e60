"""Backbones: timm ViTs (:mod:`.vit`), the offline micro-ViT with its pretraining (:mod:`.micro_vit`),
creation by name (:mod:`.create`), and looking inside a ViT (:mod:`.inspection`); frozen language
encoders stepped block by block (:mod:`.text`: Hugging Face BERT/RoBERTa/CLIP, creation by name) and
the offline micro text encoder with its masked-language-model pretraining (:mod:`.micro_text`)."""

from avpet_core.backbones.create import create_backbone, create_text_encoder
from avpet_core.backbones.micro_vit import (
    MICRO_VIT,
    MicroViTConfig,
    PretrainConfig,
    build_micro_vit,
    cache_paths,
    pretrain_micro_vit,
    pretrained_micro_vit,
)
from avpet_core.backbones.micro_text import (
    MicroTextConfig,
    MicroTextEncoder,
    TextPretrainConfig,
    WordTokenizer,
    build_micro_text_encoder,
    pretrain_micro_text,
    pretrained_micro_text,
)
from avpet_core.backbones.text import (
    KNOWN_CONFIGS,
    MICRO_TEXT,
    HFTextEncoder,
    TextEncoder,
    TextEncoderError,
)
from avpet_core.backbones.vit import (
    PAPER_BACKBONES,
    WEIGHT_SUFFIXES,
    BackboneError,
    freeze_module,
    load_weights,
    normalise_images,
    patch_grid,
    read_state_dict,
)

__all__ = [
    "MICRO_VIT",
    "PAPER_BACKBONES",
    "WEIGHT_SUFFIXES",
    "BackboneError",
    "MicroViTConfig",
    "PretrainConfig",
    "build_micro_vit",
    "cache_paths",
    "create_backbone",
    "freeze_module",
    "load_weights",
    "normalise_images",
    "patch_grid",
    "pretrain_micro_vit",
    "pretrained_micro_vit",
    "read_state_dict",
    "KNOWN_CONFIGS",
    "MICRO_TEXT",
    "HFTextEncoder",
    "MicroTextConfig",
    "MicroTextEncoder",
    "TextEncoder",
    "TextEncoderError",
    "TextPretrainConfig",
    "WordTokenizer",
    "build_micro_text_encoder",
    "create_text_encoder",
    "pretrain_micro_text",
    "pretrained_micro_text",
]
