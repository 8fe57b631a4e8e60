"""Backbones: timm ViTs (:mod:`.vit`), the offline micro-ViT with its pretraining (:mod:`.micro_vit`),
creation by name (:mod:`.create`), and looking inside a ViT (:mod:`.inspection`)."""

from avpet_core.backbones.create import create_backbone
from avpet_core.backbones.micro_vit import (
    MICRO_VIT,
    MicroViTConfig,
    PretrainConfig,
    build_micro_vit,
    cache_paths,
    pretrain_micro_vit,
    pretrained_micro_vit,
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
    "MICRO_VIT", "PAPER_BACKBONES", "WEIGHT_SUFFIXES", "BackboneError", "MicroViTConfig", "PretrainConfig",
    "build_micro_vit", "cache_paths", "create_backbone", "freeze_module", "load_weights", "normalise_images",
    "patch_grid", "pretrain_micro_vit", "pretrained_micro_vit", "read_state_dict",
]
