"""The book's offline backbone: a micro-ViT, and its image pretraining with train-or-load caching.

The paper's backbone is a ViT pretrained on ImageNet-21k images. Offline, the book pretrains a
micro-ViT (:class:`MicroViTConfig`: 4 timm ``Block``s of width 96 on 48 x 48 images) on the
16-class shapes-and-textures task of :mod:`avpet_core.data.procedural_images` instead. Like the
paper's backbone, it never sees audio.

:func:`pretrained_micro_vit` trains once and caches the result; later calls load it. The cache
(:mod:`avpet_core.backbones.cached`, shared with the micro text encoder) lives in
``$AVPET_CACHE_DIR`` (default ``~/.cache/avpet``, :mod:`avpet_core.files`) under a name derived
from the full configuration, so changing any setting trains a new model rather than loading a
stale one.

Training is deterministic on CPU for a given configuration (seeded generators, deterministic
algorithms, one thread), and does not disturb the caller's global RNG state. The cache key also
holds the numeric environment (:func:`avpet_core.reproducibility.environment_key`): a model trained
without the book's pinned CPU code paths, by an earlier version or in a reader's own session, is
never loaded by a pinned run, and each record says what it was trained under.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from tqdm.auto import tqdm

from avpet_core.backbones.cached import cache_paths, pretraining_key, train_or_load
from avpet_core.backbones.vit import normalise_images
from avpet_core.data.procedural_images import NUM_CLASSES, ShapesTexturesConfig, draw_shapes_textures
from avpet_core.reproducibility import NUM_THREADS, numeric_environment, pin_runtime
from avpet_core.schedules import warmup_cosine

MICRO_VIT = "micro_vit"
"""Name of the book's offline backbone: a 4-block, 96-dimensional ViT on 48 x 48 images (8 x 8 patches)."""


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
    model = VisionTransformer(num_classes=num_classes, dynamic_img_size=dynamic_img_size, **config.vit_kwargs())
    model.pretrained_cfg = {
        "architecture": MICRO_VIT,
        "input_size": (3, config.img_size, config.img_size),
        "mean": config.mean,
        "std": config.std,
        "num_classes": num_classes,
    }
    return model


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the pretrained micro-ViT (and so its cache key)."""

    cache_name: ClassVar[str] = MICRO_VIT  # its cache files are micro_vit-{key}.* (not a field: not in the key)

    model: MicroViTConfig = field(default_factory=MicroViTConfig)
    images: ShapesTexturesConfig = field(default_factory=ShapesTexturesConfig)
    steps: int = 2400
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    seed: int = 0
    test_size: int = 2000
    test_seed: int = 10_000  # the held-out test images are drawn from their own seed
    eval_every: int = 400
    num_threads: int = NUM_THREADS

    def key(self) -> str:
        """Hash of the configuration and of the numeric environment it is trained in."""
        return pretraining_key(self)


@contextmanager
def deterministic_cpu(num_threads: int):
    """Fixed thread count and deterministic algorithms for the duration of the block
    (:func:`~avpet_core.reproducibility.pin_runtime`, then ``num_threads``)."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    pin_runtime()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def test_set(config: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out test images (in ``[0, 1]``) and labels; never used for training."""
    generator = torch.Generator().manual_seed(config.test_seed)
    return draw_shapes_textures(config.test_size, generator, config.images)


@torch.no_grad()
def held_out_accuracy(
    model: VisionTransformer, config: PretrainConfig = PretrainConfig(), batch_size: int = 500
) -> float:
    """Top-1 accuracy of a micro-ViT classifier on the held-out procedural test set."""
    images, labels = test_set(config)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(normalise_images(images[start : start + batch_size], model))
        correct += (logits.argmax(-1) == labels[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(labels)


def pretrain_micro_vit(
    config: PretrainConfig = PretrainConfig(), *, progress: bool = True
) -> tuple[VisionTransformer, dict]:
    """Train a micro-ViT classifier on shapes-and-textures from scratch.

    Returns the model (with its 16-way head) and a record: test accuracy, the loss/accuracy
    history, wall time, and the configuration.
    """
    history = []
    start = time.perf_counter()
    with deterministic_cpu(config.num_threads):
        torch.manual_seed(config.seed)
        model = build_micro_vit(config.model, num_classes=NUM_CLASSES)
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: warmup_cosine(step, config.steps, config.warmup_steps, decay_during_warmup=True)
        )
        generator = torch.Generator().manual_seed(config.seed + 1)
        model.train()
        bar = tqdm(range(config.steps), desc="pretraining micro-ViT", disable=not progress, mininterval=3.0)
        for step in bar:
            images, labels = draw_shapes_textures(config.batch_size, generator, config.images)
            loss = F.cross_entropy(model(normalise_images(images, model)), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                accuracy = held_out_accuracy(model, config)
                history.append({"step": step + 1, "train_loss": round(loss.item(), 4), "test_accuracy": accuracy})
                bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{accuracy:.3f}")
        model.eval()
        environment = numeric_environment()
    record = {
        "test_accuracy": history[-1]["test_accuracy"],
        "history": history,
        "train_seconds": round(time.perf_counter() - start, 1),
        "num_threads": config.num_threads,
        "torch_version": torch.__version__,
        "numeric_environment": environment,
        "config": asdict(config),
    }
    return model, record


def pretrained_micro_vit(
    config: PretrainConfig = PretrainConfig(),
    *,
    dynamic_img_size: bool = True,
    retrain: bool = False,
    progress: bool = True,
) -> VisionTransformer:
    """The pretrained micro-ViT classifier: loaded from the cache, or trained and cached now
    (:func:`~avpet_core.backbones.cached.train_or_load`).

    The returned model carries its 16-way head; ``model.pretraining`` holds the training record
    (test accuracy, history, wall time), and ``model.pretrained_cfg["file"]`` the weights file.
    """
    model = train_or_load(
        config,
        train=lambda: pretrain_micro_vit(config, progress=progress),
        build=lambda: build_micro_vit(config.model, num_classes=NUM_CLASSES, dynamic_img_size=dynamic_img_size),
        retrain=retrain,
    )
    weights_path, _ = cache_paths(config)
    model.pretrained_cfg = {**model.pretrained_cfg, "file": str(weights_path)}  # provenance, as load_weights keeps it
    return model
