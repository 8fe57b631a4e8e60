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
MEDIA_NAMES = {"visual": "frames", "audio": "audio"}

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


SITES = ("attn", "mlp")
"""The two sublayers of a block, in order: where sublayer adapters sit."""


def frozen_sublayer(block: nn.Module, site: str, x: torch.Tensor) -> torch.Tensor:
    """One pre-norm sublayer of a timm ``Block`` with its residual: ``X + MSA(X)`` at ``"attn"``,
    ``Y + FFN(Y)`` at ``"mlp"`` (layer scale and drop path as timm applies them)."""
    if site == "attn":
        return x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def streams_block_step(
    block: nn.Module | Mapping[str, nn.Module],
    tokens: Mapping[str, torch.Tensor],
    adapter_at: Callable[[str, str], SublayerAdapter | None],
    fixed: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Advance every stream through one pre-norm timm ``Block``, with the adapters of each stream.

    ``block`` is the block every stream runs (one frozen ViT) or one block per stream;
    ``adapter_at(stream, site)`` the stream's adapter at ``"attn"`` or ``"mlp"`` (``None``: none),
    which reads the stream's own sublayer input and the other streams' (the module docstring)::

        Y^m = X^m + MSA(X^m) + A^m_attn(X^m, {others: X})
        X^m = Y^m + FFN(Y^m) + A^m_mlp(Y^m, {others: Y})

    ``fixed[stream][site]``: the input at ``site`` of a frozen stream computed beforehand
    (:mod:`avpet_core.models.frozen_tokens`); such a stream is read by the others' adapters, not
    advanced, and is not in the result.
    """
    fixed = fixed or {}
    blocks = block if isinstance(block, Mapping) else {stream: block for stream in tokens}

    def sublayer(site: str, live: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {**live, **{stream: sites[site] for stream, sites in fixed.items() if site in sites}}
        out = {stream: frozen_sublayer(blocks[stream], site, x) for stream, x in live.items()}
        for stream, x in live.items():
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

    def embed_stream(self, stream: str, images: torch.Tensor) -> torch.Tensor:
        """A stream's ``(*lead, 3, H, W)`` media as ``(B*, 1+N, D)`` tokens: frames normalised with the
        backbone's mean and std first (``normalise_frames``), spectrograms as they come."""
        if stream == "visual" and self.config.normalise_frames:
            images = normalise_images(images, self.backbone)
        return self.embed(images.reshape(-1, *images.shape[-3:]))

    def block_step(self, index: int, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance both streams through block ``index`` (the four lines of the module docstring)."""
        out = self.advance(index, {"visual": visual, "audio": audio})
        return out["visual"], out["audio"]

    def advance(
        self, index: int, live: dict[str, torch.Tensor], fixed: Mapping[str, Mapping[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor]:
        """Advance the ``live`` streams through block ``index``; ``fixed`` streams are read, not advanced."""
        return streams_block_step(
            self.backbone.blocks[index], live, lambda stream, site: self.adapter(stream, index, site), fixed
        )

    # -- frozen streams, computed once (avpet_core.models.frozen_tokens) ------------------------
    def frozen_stream_names(self) -> tuple[str, ...]:
        """The streams that carry no adapter: the frozen ViT on their own input."""
        return tuple(stream for stream in STREAMS if stream not in self.config.adapted_streams)

    def read_sites(self) -> tuple[str, ...]:
        """The sites (of :data:`SITES`, in order) where adapters read the other stream's tokens."""
        adapter = self.config.adapter
        used = adapter.sites if adapter is not None and self.config.adapted_streams else ()
        return tuple(site for site in SITES if site in used)

    def frozen_stream(self, stream: str, images: torch.Tensor) -> torch.Tensor:
        """``(B, K, N, D)``: a frozen stream's tokens on ``(B, 3, H, W)`` images, what the rest of the model
        reads of it: its input at every :meth:`read_sites` site of every block, then its final tokens."""
        x, kept, sites = self.embed_stream(stream, images), [], self.read_sites()
        for block in self.backbone.blocks:
            for site in SITES:
                if site in sites:
                    kept.append(x)
                x = frozen_sublayer(block, site, x)
        kept.append(self.backbone.norm(x))
        return torch.stack(kept, dim=1)

    def forward(
        self,
        frames: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        *,
        frozen: Mapping[str, torch.Tensor] | None = None,
        keep_block_inputs: bool = False,
    ) -> DualStreamOutput:
        """Run both streams.

        Args:
            frames: ``(*lead, 3, H, W)`` RGB frames in ``[0, 1]``.
            audio: ``(*lead, 3, mel, time)`` normalised spectrogram images (same ``lead``).
            frozen: ``{stream: (*lead, K, N, D)}``, the tokens of a stream without adapters computed
                beforehand by :meth:`frozen_stream` (:mod:`avpet_core.models.frozen_tokens`); that
                stream's media are then not needed. The result is the same as without them.
            keep_block_inputs: also return every block's input tokens (not with ``frozen``).
        """
        frozen = dict(frozen or {})
        media = {"visual": frames, "audio": audio}
        lead = self._check_inputs(media, frozen)
        if keep_block_inputs and frozen:
            raise DualStreamError("keep_block_inputs needs both streams computed here, not frozen tokens")
        live = {stream: self.embed_stream(stream, x) for stream, x in media.items() if stream not in frozen}
        given = {stream: tokens.reshape(-1, *tokens.shape[-3:]) for stream, tokens in frozen.items()}
        sites = self.read_sites()
        kept = [] if keep_block_inputs else None
        recompute = self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for index in range(self.depth):
            if kept is not None:
                kept.append((live["visual"], live["audio"]))
            fixed = {
                stream: {site: tokens[:, index * len(sites) + j] for j, site in enumerate(sites)}
                for stream, tokens in given.items()
            }
            if recompute:
                live = checkpoint(self.advance, index, live, fixed, use_reentrant=False)
            else:
                live = self.advance(index, live, fixed)
        final = {stream: self.backbone.norm(x) for stream, x in live.items()}
        final.update({stream: tokens[:, -1] for stream, tokens in given.items()})
        return DualStreamOutput(
            visual_tokens=final["visual"].reshape(*lead, *final["visual"].shape[1:]),
            audio_tokens=final["audio"].reshape(*lead, *final["audio"].shape[1:]),
            block_inputs=kept,
        )

    def _check_inputs(self, media: Mapping[str, torch.Tensor | None], frozen: Mapping[str, torch.Tensor]) -> tuple:
        leads = {}
        for stream, x in media.items():
            if stream in frozen:
                if stream in self.config.adapted_streams:
                    raise DualStreamError(f"the {stream} stream carries adapters: its tokens cannot be given frozen")
                k = len(self.read_sites()) * self.depth + 1
                if (
                    not isinstance(frozen[stream], torch.Tensor)
                    or frozen[stream].ndim < 3
                    or frozen[stream].shape[-3] != k
                ):
                    shape = tuple(getattr(frozen[stream], "shape", ()))
                    raise DualStreamError(f"frozen {stream} tokens must be (..., {k}, tokens, dim), got {shape}")
                leads[stream] = tuple(frozen[stream].shape[:-3])
                continue
            name = MEDIA_NAMES[stream]
            if not isinstance(x, torch.Tensor) or x.ndim < 4 or x.shape[-3] != 3:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise DualStreamError(f"{name} must be a tensor (..., 3, height, width), got {shape}")
            if not x.is_floating_point():
                raise DualStreamError(f"{name} must be floating point, got {x.dtype}")
            leads[stream] = tuple(x.shape[:-3])
        if leads["visual"] != leads["audio"]:
            raise DualStreamError(
                f"frames {leads['visual']} and audio {leads['audio']} must share their leading "
                f"(batch, segment) dimensions"
            )
        return leads["visual"]


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
