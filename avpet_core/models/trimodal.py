"""Three frozen encoders — visual, audio, language — advanced stage by stage, with adapters between them.

LSTTA (Liu et al., 2023) inserts its blocks *between the sequential blocks* of frozen audio, visual
and language encoders. This model runs the three side by side so that something can sit there:

    X^v = embed_v(frames), X^a = embed_a(spectrograms), Q = embed_q(question)
    for each stage s = 1 .. S:
        X^v, X^a <- the visual and audio ViTs' blocks of stage s        (with AV-PEA / LAVISH / bottleneck
        Q        <- the language encoder's blocks of stage s             adapters beside their sublayers)
        X^v, X^a, Q <- (X^v, X^a, Q) + LSTTA_s(X^v, X^a, Q)             (an LSTTA block between stages)
    final norms

**Encoders of different depths (our choice: align by stage).** With ``S`` stages, an encoder of
depth ``D`` ends stage ``s`` after block ``round(s D / S)``; by default ``S`` is the smallest
depth, so the shallowest encoder has one block per stage and the deeper ones several (a 12-block
ViT and a 6-block text encoder: two ViT blocks per text block). Different *widths* need nothing:
an LSTTA block projects each modality to its own width ``d`` and back. The visual and audio
encoders can be one frozen image ViT run twice (AV-PEA's setting; ``audio=None``) or two ViTs.
Adapters beside the ViTs' sublayers (:mod:`avpet_core.adapters`: AV-PEA, LAVISH, bottleneck) read
the other ViT stream of the same block, so they need the two ViTs at equal depth; the language
encoder then runs as it was pretrained.

Inputs: ``frames`` ``(B, T, 3, H, W)`` in ``[0, 1]``, ``audio`` ``(B, T, 3, mel, time)`` normalised
spectrogram images, ``questions`` a list of ``B`` strings (tokenised here by the language encoder's
own tokenizer). Without adapters (or with zero gates, as built) the outputs are exactly the frozen
encoders'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from avpet_core.adapters import AdapterConfig, LSTTAConfig, StageAdapterConfig, adapter_config
from avpet_core.backbones import create_backbone, create_text_encoder, freeze_module, normalise_images
from avpet_core.backbones.inspection import embed_tokens
from avpet_core.models.base import PLACEMENTS, STREAMS, FrozenEncodersModel, check_placement
from avpet_core.models.dual_stream import StreamCLS, backbone_signature, check_backbone, streams_block_step

FRAME_STREAMS = STREAMS
"""The two ViT streams (the frames of the video and its audio)."""


class TrimodalError(ValueError):
    """Encoders, adapters or inputs the trimodal model cannot use."""


@dataclass(frozen=True)
class TrimodalConfig:
    """Settings of :class:`TrimodalModel`.

    Attributes:
        adapter: a stage adapter's config (:data:`~avpet_core.adapters.STAGE_ADAPTERS`: LSTTA, blocks
            between stages), a sublayer adapter's (:data:`~avpet_core.adapters.SUBLAYER_ADAPTERS`:
            AV-PEA, LAVISH, bottleneck, beside the ViTs' sublayers), or ``None``.
        streams: for sublayer adapters, which ViT streams carry them (``"both"``, ``"audio"``, ...).
        stages: the number of stages (``None``: the smallest encoder depth).
        max_question_length: tokens of a question, padding included.
        gradient_checkpointing: recompute each stage in the backward pass (training only).
    """

    adapter: AdapterConfig | None = field(default_factory=LSTTAConfig)
    streams: str = "both"
    stages: int | None = None
    max_question_length: int = 16
    gradient_checkpointing: bool = False

    def __post_init__(self):
        check_placement(self.streams, TrimodalError)

    @property
    def has_stage_adapter(self) -> bool:
        """The adapter sits between stages (LSTTA), not beside the ViTs' sublayers."""
        return isinstance(self.adapter, StageAdapterConfig)


@dataclass
class TrimodalOutput(StreamCLS):
    """What the heads read: every modality's final tokens, and LSF's frame importance per LSTTA block."""

    visual_tokens: torch.Tensor  # (B, T, 1+N, D_v)
    audio_tokens: torch.Tensor  # (B, T, 1+M, D_a)
    text_tokens: torch.Tensor  # (B, L, D_q)
    text_mask: torch.Tensor  # (B, L), True on real tokens
    importance: list[torch.Tensor] = field(default_factory=list)  # (B, T) per LSTTA block with LSF


def stage_ends(depth: int, stages: int) -> list[int]:
    """One past the last block of each stage, for an encoder of ``depth`` blocks (align by stage)."""
    if not 1 <= stages <= depth:
        raise TrimodalError(f"{stages} stages do not fit an encoder of {depth} blocks")
    return [round((s + 1) * depth / stages) for s in range(stages)]


class TrimodalModel(FrozenEncodersModel):
    """Frozen visual, audio and language encoders with adapters (see the module docstring).

    Mode switching, ``trained_module``, ``checkpoint_prefix``, ``adapter`` and ``adapter_parameters``
    come from :class:`~avpet_core.models.base.FrozenEncodersModel`.

    Attributes:
        visual, audio: the frozen ViTs (the same module when one ViT reads both).
        text: the frozen language encoder (:class:`avpet_core.backbones.text.TextEncoder`).
        adapters: ``adapters["visual"][block][site]`` (sublayer adapters) or ``adapters[method][stage]``
            (stage adapters: ``adapters["lstta"][stage]``).
    """

    def __init__(
        self,
        visual: VisionTransformer,
        text: nn.Module,
        config: TrimodalConfig = TrimodalConfig(),
        audio: VisionTransformer | None = None,
    ):
        super().__init__()
        self.visual = freeze_module(check_backbone(visual)).eval()
        self.audio = self.visual if audio is None else freeze_module(check_backbone(audio)).eval()
        self.text = freeze_module(text).eval()
        self.config = config
        depths = {"visual": len(self.visual.blocks), "audio": len(self.audio.blocks), "text": text.depth}
        self.num_stages = config.stages if config.stages is not None else min(depths.values())
        self.ends = {m: stage_ends(depth, self.num_stages) for m, depth in depths.items()}
        self.dims = {"visual": self.visual.embed_dim, "audio": self.audio.embed_dim, "text": text.width}
        self.adapters = nn.ModuleDict()
        adapter = config.adapter
        self.stage_key = adapter.method if config.has_stage_adapter else None
        if config.has_stage_adapter:
            self.adapters[self.stage_key] = nn.ModuleList(adapter.build(self.dims) for _ in range(self.num_stages))
        elif adapter is not None:
            if depths["visual"] != depths["audio"] or self.dims["visual"] != self.dims["audio"]:
                raise TrimodalError(
                    f"{adapter.method} adapters read the other ViT stream of the same block: the "
                    f"visual and audio ViTs need equal depth and width, got {depths} and {self.dims}"
                )
            self.add_sublayer_adapters(adapter, PLACEMENTS[config.streams], self.dims, depths["visual"])

    def frozen_encoders(self) -> tuple[nn.Module, ...]:
        return (self.visual, self.audio, self.text)

    # -- widths, and what the trained adapters fit (avpet_core.models.base.TrainableModel) ------
    @property
    def feature_dims(self) -> dict[str, int]:
        """The widths of the tokens a head reads, by modality."""
        return dict(self.dims)

    def signature(self) -> dict:
        adapter = self.config.adapter
        audio = "visual" if self.audio is self.visual else backbone_signature(self.audio)
        return {
            "visual": backbone_signature(self.visual),
            "audio": audio,
            "text": self.text.signature(),
            "adapter": adapter.as_dict() if adapter is not None else None,
            "streams": self.config.streams,
            "stages": self.num_stages,
        }

    def describe_signature(self, signature: dict) -> str:
        visual, text = signature.get("visual") or {}, signature.get("text") or {}
        return (
            f"visual {visual.get('architecture')} (D={visual.get('embed_dim')}), audio {signature.get('audio')}, "
            f"text {text}, adapter {signature.get('adapter')} on '{signature.get('streams')}', "
            f"{signature.get('stages')} stages"
        )

    # -- forward ------------------------------------------------------------------------------
    def tokenize(self, questions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.text.encode(list(questions), self.config.max_question_length)
        return ids.to(device), mask.to(device)

    def _vit_blocks(self, stage: int, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        starts = {m: self.ends[m][stage - 1] if stage else 0 for m in FRAME_STREAMS}
        if self.audio is self.visual or len(self.visual.blocks) == len(self.audio.blocks):
            for index in range(starts["visual"], self.ends["visual"][stage]):
                blocks = {"visual": self.visual.blocks[index], "audio": self.audio.blocks[index]}
                tokens = streams_block_step(blocks, tokens, lambda stream, site: self.adapter(stream, index, site))
            return tokens
        for stream, vit in (("visual", self.visual), ("audio", self.audio)):
            for index in range(starts[stream], self.ends[stream][stage]):
                tokens[stream] = streams_block_step(
                    {stream: vit.blocks[index]}, {stream: tokens[stream]}, lambda s, site: None
                )[stream]
        return tokens

    def stage(self, stage: int, visual, audio, text, text_mask, lead: tuple[int, int]):
        """Advance the three encoders through stage ``stage``, then its stage adapter (LSTTA block), if any."""
        tokens = self._vit_blocks(stage, {"visual": visual, "audio": audio})
        for index in range(self.ends["text"][stage - 1] if stage else 0, self.ends["text"][stage]):
            text = self.text.block(index, text, text_mask)
        visual, audio, importance = tokens["visual"], tokens["audio"], None
        if self.stage_key is not None:
            frames = {
                "visual": visual.reshape(*lead, *visual.shape[1:]),
                "audio": audio.reshape(*lead, *audio.shape[1:]),
                "text": text,
            }
            out = self.adapters[self.stage_key][stage](frames, text_mask)
            visual = visual + out.deltas["visual"].reshape(visual.shape)
            audio = audio + out.deltas["audio"].reshape(audio.shape)
            text = text + out.deltas["text"]
            importance = out.importance
        return visual, audio, text, importance

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, questions: list[str]) -> TrimodalOutput:
        """Run the three encoders on ``B`` videos and their ``B`` questions (text, tokenised here)."""
        if len(questions) != frames.shape[0]:
            raise TrimodalError(f"{len(questions)} questions for {frames.shape[0]} videos")
        return self.forward_tokens(frames, audio, *self.tokenize(questions, frames.device))

    def forward_tokens(
        self, frames: torch.Tensor, audio: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor
    ) -> TrimodalOutput:
        """:meth:`forward` on question token ids ``(B, L)`` and their mask (True on real tokens)."""
        if frames.ndim != 5 or audio.ndim != 5 or frames.shape[:2] != audio.shape[:2]:
            raise TrimodalError(
                f"frames (B, T, 3, H, W) and audio (B, T, 3, mel, time) with the same B and T, "
                f"got {tuple(frames.shape)} and {tuple(audio.shape)}"
            )
        lead = tuple(frames.shape[:2])
        visual = embed_tokens(self.visual, normalise_images(frames, self.visual).flatten(0, 1))
        sound = embed_tokens(self.audio, audio.flatten(0, 1))
        text = self.text.embed(ids)
        importance = []
        recompute = self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for s in range(self.num_stages):
            if recompute:
                visual, sound, text, alpha = checkpoint(
                    self.stage, s, visual, sound, text, text_mask, lead, use_reentrant=False
                )
            else:
                visual, sound, text, alpha = self.stage(s, visual, sound, text, text_mask, lead)
            if alpha is not None:
                importance.append(alpha)
        visual, sound, text = self.visual.norm(visual), self.audio.norm(sound), self.text.final(text)
        return TrimodalOutput(
            visual_tokens=visual.reshape(*lead, *visual.shape[1:]),
            audio_tokens=sound.reshape(*lead, *sound.shape[1:]),
            text_tokens=text,
            text_mask=text_mask,
            importance=importance,
        )


def build_trimodal(
    backbone: str = "micro_vit",
    adapter: str | AdapterConfig | None = "lstta",
    streams: str = "both",
    *,
    text_encoder: str = "micro_text",
    pretrained: bool = False,
    text_pretrained: bool | None = None,
    weights_file=None,
    audio_backbone: str | None = None,
    stages: int | None = None,
    gradient_checkpointing: bool = False,
    **adapter_options,
) -> TrimodalModel:
    """Create the encoders by name and wrap them: one ViT for both streams unless ``audio_backbone`` names
    a second; the language encoder by :func:`avpet_core.backbones.text.create_text_encoder`
    (``text_pretrained`` defaults to ``pretrained``)."""
    if isinstance(adapter, str):
        adapter = adapter_config(adapter, **adapter_options)
    elif adapter_options:
        raise TrimodalError("adapter options can only be given with an adapter method name")
    visual = create_backbone(backbone, pretrained=pretrained, weights_file=weights_file, freeze=True)
    audio = None if audio_backbone is None else create_backbone(audio_backbone, pretrained=pretrained, freeze=True)
    # under ``with torch.device("meta")`` (counting without weights) the language encoder follows too
    text = create_text_encoder(
        text_encoder,
        pretrained=pretrained if text_pretrained is None else text_pretrained,
        device=torch.get_default_device(),
    )
    config = TrimodalConfig(
        adapter=adapter, streams=streams, stages=stages, gradient_checkpointing=gradient_checkpointing
    )
    return TrimodalModel(visual, text, config, audio=audio)
