"""One frozen ViT, two streams: the dual-stream transformer of AV-PEA (Fig. 1a) and LAVISH.

The same frozen timm ``VisionTransformer`` reads the video frame (visual stream) and the audio
spectrogram (audio stream, with its own token count). The two streams are advanced **block by
block, in lockstep**, so that at every block an adapter of one stream can look at the other
stream's tokens of the same block:

    for each block l:
        Y^v = X^v + MSA_l(X^v) + A^v_attn(X^v, {audio: X^a})         (AV-PEA eqs. 3-4; LAVISH p1)
        Y^a = X^a + MSA_l(X^a) + A^a_attn(X^a, {visual: X^v})
        X^v = Y^v + FFN_l(Y^v) + A^v_mlp(Y^v, {audio: Y^a})          (LAVISH p2 only)
        X^a = Y^a + FFN_l(Y^a) + A^a_mlp(Y^a, {visual: Y^v})

``MSA_l`` and ``FFN_l`` are exactly timm's ``Block`` sublayers (pre-norm, layer scale, drop path);
without adapters a step is the same sequence of operations as ``Block.forward``, so the model
reproduces the frozen backbone bit for bit. Which streams carry adapters is a setting (AV-PEA
Table 4): ``"none"``, ``"audio"``, ``"visual"`` or ``"both"``; an adapted stream still reads the
other stream's tokens when the other stream has no adapters of its own.

Inputs may carry any leading dimensions, e.g. ``(batch, segments, 3, H, W)`` frames with
``(batch, segments, 3, mel, frames)`` spectrograms; they are flattened for the ViT and the outputs
have the same leading dimensions. Frames are ``[0, 1]`` RGB and are normalised here with the
backbone's own mean and std; spectrograms arrive already normalised by :mod:`avpet_core.audio`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from avpet_core.adapters import AdapterConfig, AVPEAConfig, StageAdapterConfig, SublayerAdapter, adapter_config
from avpet_core.backbones import create_backbone, freeze_module, normalise_images
from avpet_core.backbones.inspection import embed_tokens
from avpet_core.models.base import PLACEMENTS, STREAMS, FrozenEncodersModel, check_placement

OTHER_STREAM = {"visual": "audio", "audio": "visual"}

BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


class DualStreamError(ValueError):
    """A backbone or input the dual-stream model cannot use."""


@dataclass(frozen=True)
class DualStreamConfig:
    """Settings of :class:`DualStreamViT`.

    Attributes:
        adapter: a sublayer adapter method's config (``None``: the frozen backbone alone).
        streams: which streams carry adapters: ``"none"``, ``"audio"``, ``"visual"``, ``"both"``.
        gradient_checkpointing: recompute each block in the backward pass instead of storing its
            activations (training only). With LAVISH's BatchNorm the running statistics are then
            updated twice per step (once more in the recomputation).
        normalise_frames: normalise ``[0, 1]`` frames with the backbone's mean/std in ``forward``.
    """

    adapter: AdapterConfig | None = field(default_factory=AVPEAConfig)
    streams: str = "both"
    gradient_checkpointing: bool = False
    normalise_frames: bool = True

    def __post_init__(self):
        check_placement(self.streams, DualStreamError)
        if isinstance(self.adapter, StageAdapterConfig):
            raise DualStreamError(
                f"{self.adapter.method} adapts audio, video and language together; build it with "
                "avpet_core.models.build_trimodal (a dual-stream model has no language encoder)"
            )

    @property
    def adapted_streams(self) -> tuple[str, ...]:
        return PLACEMENTS[self.streams] if self.adapter is not None else ()


class StreamCLS:
    """The CLS tokens of an output with ``visual_tokens`` and ``audio_tokens`` (CLS first)."""

    @property
    def visual_cls(self) -> torch.Tensor:
        """``(*lead, D)``: the visual stream's CLS token after the final norm."""
        return self.visual_tokens[..., 0, :]

    @property
    def audio_cls(self) -> torch.Tensor:
        """``(*lead, D)``: the audio stream's CLS token after the final norm."""
        return self.audio_tokens[..., 0, :]


@dataclass
class DualStreamOutput(StreamCLS):
    """What the task heads need from the two streams.

    Attributes:
        visual_tokens: ``(*lead, 1 + N_v, D)`` final (normed) tokens of the visual stream, CLS first.
        audio_tokens: ``(*lead, 1 + N_a, D)`` final tokens of the audio stream.
        block_inputs: if asked for, the ``(visual, audio)`` input tokens of every block, flattened
            to ``(B*, N, D)`` (for plots such as the CLS cross-attention maps).
    """

    visual_tokens: torch.Tensor
    audio_tokens: torch.Tensor
    block_inputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None


def streams_block_step(
    block: nn.Module | Mapping[str, nn.Module],
    tokens: Mapping[str, torch.Tensor],
    adapter_at: Callable[[str, str], SublayerAdapter | None],
) -> dict[str, torch.Tensor]:
    """Advance every stream through one pre-norm timm ``Block``, with the adapters of each stream.

    ``block`` is the block every stream runs (one frozen ViT) or one block per stream;
    ``adapter_at(stream, site)`` the stream's adapter at ``"attn"`` or ``"mlp"`` (``None``: none),
    which reads the stream's own sublayer input and the other streams' (the module docstring)::

        Y^m = X^m + MSA(X^m) + A^m_attn(X^m, {others: X})
        X^m = Y^m + FFN(Y^m) + A^m_mlp(Y^m, {others: Y})
    """
    blocks = block if isinstance(block, Mapping) else {stream: block for stream in tokens}

    def sublayer(site: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for stream, x in inputs.items():
            blk = blocks[stream]
            if site == "attn":
                out[stream] = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x))))
            else:
                out[stream] = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        for stream, x in inputs.items():
            adapter = adapter_at(stream, site)
            if adapter is not None:
                out[stream] = out[stream] + adapter(x, {other: y for other, y in inputs.items() if other != stream})
        return out

    return sublayer("mlp", sublayer("attn", dict(tokens)))


def backbone_signature(vit: VisionTransformer) -> dict:
    """A frozen ViT's architecture and shape, JSON-ready: what adapters trained on it must match."""
    return {
        "architecture": vit.pretrained_cfg.get("architecture", type(vit).__name__),
        "embed_dim": int(vit.embed_dim),
        "depth": len(vit.blocks),
        "num_heads": int(vit.blocks[0].attn.num_heads),
        "patch_size": list(vit.patch_embed.patch_size),
    }


def check_backbone(backbone: nn.Module) -> VisionTransformer:
    """The backbone must be a timm ViT with a CLS token and pre-norm ``Block``s."""
    if not isinstance(backbone, VisionTransformer):
        raise DualStreamError(f"the dual-stream model needs a timm VisionTransformer, got {type(backbone).__name__}")
    if backbone.cls_token is None:
        raise DualStreamError("the backbone has no CLS token; AV-PEA's cross-attention needs one (class_token=True)")
    for index, block in enumerate(backbone.blocks):
        missing = [part for part in BLOCK_PARTS if not hasattr(block, part)]
        if missing:
            raise DualStreamError(
                f"block {index} ({type(block).__name__}) lacks {missing}; only pre-norm timm Blocks are supported"
            )
    return backbone


class DualStreamViT(FrozenEncodersModel):
    """A frozen ViT shared by a visual and an audio stream, with per-block, per-stream adapters.

    Mode switching, ``trained_module``, ``checkpoint_prefix``, ``adapter`` and ``adapter_parameters``
    come from :class:`~avpet_core.models.base.FrozenEncodersModel`.

    Attributes:
        backbone: the frozen timm ViT (never trained; kept in eval mode).
        adapters: ``adapters[stream][block][site]``, e.g. ``adapters["audio"][3]["attn"]``.
    """

    def __init__(self, backbone: VisionTransformer, config: DualStreamConfig = DualStreamConfig()):
        super().__init__()
        self.backbone = freeze_module(check_backbone(backbone)).eval()
        self.config = config
        self.embed_dim = backbone.embed_dim
        self.adapters = nn.ModuleDict()
        if config.adapter is not None:
            self.add_sublayer_adapters(
                config.adapter, config.adapted_streams, dict.fromkeys(STREAMS, self.embed_dim), len(backbone.blocks)
            )

    def frozen_encoders(self) -> tuple[nn.Module, ...]:
        return (self.backbone,)

    # -- switches -----------------------------------------------------------------------------
    def set_fused_attention(self, fused: bool) -> None:
        """Use ``F.scaled_dot_product_attention`` (fused) or timm's explicit softmax path in every block."""
        for block in self.backbone.blocks:
            block.attn.fused_attn = fused

    @property
    def depth(self) -> int:
        return len(self.backbone.blocks)

    @property
    def feature_dims(self) -> int:
        """The width of the tokens a head reads (both streams share the backbone's)."""
        return self.embed_dim

    # -- what the trained adapters fit (avpet_core.models.base.TrainableModel) ------------------
    def signature(self) -> dict:
        """The frozen backbone's architecture and shape, the adapter config and the adapted streams."""
        adapter = self.config.adapter
        return {
            "backbone": backbone_signature(self.backbone),
            "adapter": adapter.as_dict() if adapter is not None else None,
            "streams": self.config.streams,
        }

    def describe_signature(self, signature: dict) -> str:
        b, a = signature.get("backbone") or {}, signature.get("adapter")
        adapter = "no adapter" if a is None else ", ".join(f"{k}={v}" for k, v in a.items())
        return (
            f"backbone {b.get('architecture')} (D={b.get('embed_dim')}, depth {b.get('depth')}, "
            f"patch {b.get('patch_size')}), adapter [{adapter}] on streams '{signature.get('streams')}'"
        )

    # -- forward ------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, CLS token and (resampled) position embeddings: ``(B, 3, H, W) -> (B, 1+N, D)``
        (:func:`~avpet_core.backbones.inspection.embed_tokens`)."""
        return embed_tokens(self.backbone, images)

    def block_step(self, index: int, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance both streams through block ``index`` (the four lines of the module docstring)."""
        out = streams_block_step(
            self.backbone.blocks[index],
            {"visual": visual, "audio": audio},
            lambda stream, site: self.adapter(stream, index, site),
        )
        return out["visual"], out["audio"]

    def forward(
        self, frames: torch.Tensor, audio: torch.Tensor, *, keep_block_inputs: bool = False
    ) -> DualStreamOutput:
        """Run both streams.

        Args:
            frames: ``(*lead, 3, H, W)`` RGB frames in ``[0, 1]``.
            audio: ``(*lead, 3, mel, time)`` normalised spectrogram images (same ``lead``).
            keep_block_inputs: also return every block's input tokens.
        """
        lead = self._check_inputs(frames, audio)
        if self.config.normalise_frames:
            frames = normalise_images(frames, self.backbone)
        visual = self.embed(frames.reshape(-1, *frames.shape[-3:]))
        sound = self.embed(audio.reshape(-1, *audio.shape[-3:]))
        kept = [] if keep_block_inputs else None
        recompute = self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for index in range(self.depth):
            if kept is not None:
                kept.append((visual, sound))
            if recompute:
                visual, sound = checkpoint(self.block_step, index, visual, sound, use_reentrant=False)
            else:
                visual, sound = self.block_step(index, visual, sound)
        visual, sound = self.backbone.norm(visual), self.backbone.norm(sound)
        return DualStreamOutput(
            visual_tokens=visual.reshape(*lead, *visual.shape[1:]),
            audio_tokens=sound.reshape(*lead, *sound.shape[1:]),
            block_inputs=kept,
        )

    def _check_inputs(self, frames: torch.Tensor, audio: torch.Tensor) -> tuple[int, ...]:
        for name, x in (("frames", frames), ("audio", audio)):
            if not isinstance(x, torch.Tensor) or x.ndim < 4 or x.shape[-3] != 3:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise DualStreamError(f"{name} must be a tensor (..., 3, height, width), got {shape}")
            if not x.is_floating_point():
                raise DualStreamError(f"{name} must be floating point, got {x.dtype}")
        if frames.shape[:-3] != audio.shape[:-3]:
            raise DualStreamError(
                f"frames {tuple(frames.shape)} and audio {tuple(audio.shape)} must share their leading "
                f"(batch, segment) dimensions"
            )
        return tuple(frames.shape[:-3])


def build_dual_stream(
    backbone: str = "micro_vit",
    adapter: str | AdapterConfig | None = "avpea",
    streams: str = "both",
    *,
    pretrained: bool = False,
    weights_file=None,
    gradient_checkpointing: bool = False,
    **adapter_options,
) -> DualStreamViT:
    """Create the backbone by name (see :func:`avpet_core.backbones.create_backbone`) and wrap it.

    ``adapter`` is a method name (``"avpea"``, ``"lavish"``, ``"houlsby"``, ``"none"``), with
    ``adapter_options`` overriding its defaults, or a ready config.
    """
    if isinstance(adapter, str):
        adapter = adapter_config(adapter, **adapter_options)
    elif adapter_options:
        raise DualStreamError("adapter options can only be given with an adapter method name")
    vit = create_backbone(backbone, pretrained=pretrained, weights_file=weights_file, freeze=True)
    config = DualStreamConfig(adapter=adapter, streams=streams, gradient_checkpointing=gradient_checkpointing)
    return DualStreamViT(vit, config)
