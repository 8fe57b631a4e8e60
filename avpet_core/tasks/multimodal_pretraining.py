"""Self-supervised pretraining of :class:`~avpet_core.models.shared_lowrank.SharedMultimodalTransformer`
(chapter 8), CNNs and Transformers trained end to end with the book's training loop
(:func:`avpet_core.train.fit`); its evaluation is the video-classification task
(:mod:`avpet_core.tasks.video_classification`). This file holds the task and the objectives it
trains; the chapter's study — pretraining one model per run and seed, probing and fine-tuning it
(:func:`~avpet_core.pretraining.pretraining_study`, :func:`~avpet_core.pretraining.pretrain`) — is
:mod:`avpet_core.pretraining`, and the contrastive losses are :mod:`avpet_core.losses`.

The objectives follow Lee et al. (ICLR 2021) as summarised in the reference notes (§5: "masked
embedding prediction with InfoNCE over negatives, plus correct-pair prediction; content-aware
negative sampling picks negatives by their distance in the CNN embedding space"); the paper's exact
recipe is not reproduced here (the public code has no pretraining), so the details below are ours.
Pretraining (labels unused) optimises, on every batch:

* **masked embedding prediction (MEP)** — a fraction of each modality's segment embeddings is
  replaced by a learned mask token before the Transformers; the final token at a masked position,
  through a linear head, must pick the embedding it replaced out of ``num_negatives + 1``
  candidates (InfoNCE over cosine similarities, :func:`~avpet_core.losses.info_nce`). Candidates
  are the same modality's segment embeddings in the batch, **detached** (``detach_targets``,
  default on): they are targets, and the stems are trained end to end only through the
  Transformer inputs. With trainable candidates the InfoNCE gradient also reaches the stems
  through the candidates, and the stems can take a shortcut — embeddings that encode what all
  segments of one video share, so that the positive is found by its video rather than by its
  content; in our SynthAVE runs that made the summary features far worse for classification than
  those of an untrained model.
* **correct-pair prediction** (``pair_objective="binary"``, the paper's) — in half of the batch
  each video's audio is swapped for another video's; a linear head on the two summary tokens
  predicts whether audio and video belong together (binary cross-entropy). Alternatively or in
  addition (``"contrastive"``, ``"both"``) a **batch-wide audio-visual InfoNCE**: the summary
  token of the visual Transformer and that of the audio Transformer (before fusion, so each has
  seen one modality), each through a linear projection, must find their own partner among the
  batch's B videos, both ways (:func:`~avpet_core.losses.audio_visual_contrastive`).

Negatives for MEP are drawn either **content-aware** — from the CNN embedding space, with
probability proportional to ``exp(cos(target, candidate) / sampling_temperature)`` so that
segments that *look or sound alike* are preferred (hard negatives) — or uniformly at **random**,
the comparison. Content-aware sampling draws ``hard_fraction`` (default half) of the negatives that
way and the rest uniformly: at InfoNCE temperature 0.1, all-hard negatives are mostly near-copies of
the positive (silent segments, the same object in consecutive segments of a video) — false
negatives that keep the loss at chance, ``ln(num_negatives + 1)``. Sampling never picks the
positive itself, nor one candidate twice.

In the loop, the objectives are the head (:class:`PretrainHeads`): they run the encoder themselves,
on masked and swapped inputs, so the task hands the head the encoder rather than its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avpet_core.losses import audio_visual_contrastive, info_nce
from avpet_core.models.shared_lowrank import SharedMultimodalTransformer
from avpet_core.tasks.base import Task

NEGATIVE_SAMPLING = ("content", "random")
PAIR_OBJECTIVES = ("binary", "contrastive", "both")


@dataclass(frozen=True)
class MultimodalPretrainConfig:
    """The pretraining objectives (the optimisation settings are a :class:`~avpet_core.train.TrainConfig`).

    Attributes:
        detach_targets: MEP candidates (the positive and its negatives) are the CNN embeddings
            *detached*, so the InfoNCE gradient reaches the stems only through the Transformer inputs.
            With trainable candidates the stems learn a shortcut (see the module docstring).
        negatives: ``"content"`` or ``"random"``.
        hard_fraction: with ``negatives="content"``, the share of the ``num_negatives`` drawn by
            content; the rest are drawn uniformly (``1.0``: all by content).
        pair_objective: ``"binary"`` (correct-pair prediction, the paper's), ``"contrastive"`` (a
            batch-wide audio-visual InfoNCE on the unimodal summary tokens) or ``"both"``.
    """

    mask_prob: float = 0.25
    num_negatives: int = 16
    negatives: str = "content"
    hard_fraction: float = 0.5
    detach_targets: bool = True
    temperature: float = 0.1
    sampling_temperature: float = 0.1
    pair_objective: str = "binary"
    pair_weight: float = 1.0

    def __post_init__(self):
        if self.negatives not in NEGATIVE_SAMPLING:
            raise ValueError(f"negatives must be one of {NEGATIVE_SAMPLING}, got {self.negatives!r}")
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {self.hard_fraction}")
        if self.pair_objective not in PAIR_OBJECTIVES:
            raise ValueError(f"pair_objective must be one of {PAIR_OBJECTIVES}, got {self.pair_objective!r}")


class PretrainHeads(nn.Module):
    """MEP prediction heads (one per modality), the correct-pair classifier and the two projections of
    the audio-visual contrastive objective: the pretraining's head in the loop.

    ``out = heads(encoder, batch)`` is :func:`pretraining_losses` of the batch (masks, pair swaps and
    negatives from the heads' own generator, seeded with ``seed``); ``heads.loss(out, batch)`` keeps
    every loss of every step in ``history`` and returns ``out["total"]``.
    """

    def __init__(self, dim: int, objectives: MultimodalPretrainConfig | None = None, seed: int = 0):
        super().__init__()
        self.predict_visual, self.predict_audio = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.pair = nn.Linear(2 * dim, 1)
        self.contrast_visual, self.contrast_audio = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.objectives = objectives if objectives is not None else MultimodalPretrainConfig()
        self.generator = torch.Generator().manual_seed(seed)
        self.history: dict[str, list[float]] = {}

    def forward(self, encoder: SharedMultimodalTransformer, batch: dict) -> dict[str, torch.Tensor]:
        return pretraining_losses(encoder, self, batch["frames"], batch["audio"], self.objectives, self.generator)

    def loss(self, output: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        for name, value in output.items():
            self.history.setdefault(name, []).append(value.item())
        return output["total"]

    def predict(self, output) -> torch.Tensor:
        raise TypeError("pretraining makes no predictions: run it without a validation set")


def sample_negatives(
    targets: torch.Tensor,
    positives: torch.Tensor,
    pool: torch.Tensor,
    k: int,
    mode: str,
    temperature: float,
    generator: torch.Generator,
    hard_fraction: float = 1.0,
) -> torch.Tensor:
    """Indices ``(n, k)`` into ``pool`` ``(m, D)`` of distinct negatives for ``targets`` ``(n, D)``,
    never ``positives``.

    ``mode="content"``: ``round(k * hard_fraction)`` negatives drawn with probability
    ``∝ exp(cos(target, candidate) / temperature)`` in the (detached) CNN embedding space, the
    other ones uniformly among the candidates not yet drawn; ``mode="random"``: all uniform. The
    content-drawn negatives come first in each row.
    """
    m = pool.shape[0]
    k = min(k, m - 1)
    if mode not in NEGATIVE_SAMPLING:
        raise ValueError(f"unknown negative sampling {mode!r}")
    excluded = F.one_hot(positives, m).bool()
    hard = round(k * hard_fraction) if mode == "content" else 0
    picks = []
    if hard:
        similarity = F.normalize(targets.detach(), dim=-1) @ F.normalize(pool.detach(), dim=-1).T
        logits = (similarity / temperature).float().masked_fill(excluded, float("-inf"))
        probs = torch.softmax(logits - logits.max(dim=-1, keepdim=True).values, dim=-1)
        picks.append(torch.multinomial(probs, hard, replacement=False, generator=generator))
        excluded = excluded.scatter(1, picks[0], True)
    if k - hard:
        picks.append(torch.multinomial((~excluded).float(), k - hard, replacement=False, generator=generator))
    return torch.cat(picks, dim=1)


def pretraining_losses(
    model: SharedMultimodalTransformer,
    heads: PretrainHeads,
    frames: torch.Tensor,
    audio: torch.Tensor,
    config: MultimodalPretrainConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The losses of one batch: MEP (visual, audio), and ``pair`` (binary) and/or ``contrastive``, with accuracies."""
    visual, sound = model.embed(frames, audio)
    b, t, d = visual.shape
    # correct-pair prediction: the first half keeps its audio, the second half gets another video's
    half = b // 2
    order = torch.arange(b, device=visual.device)
    if b - half > 1:
        order[half:] = half + (torch.arange(b - half, device=visual.device) + 1) % (b - half)
    sound = sound[order]
    matched = (order == torch.arange(b, device=visual.device)).float()
    masks = [(torch.rand(b, t, generator=generator) < config.mask_prob).to(visual.device) for _ in range(2)]
    for mask in masks:
        if not mask.any():
            mask[0, 0] = True
    output = model.encode(visual, sound, masks[0], masks[1])
    losses = {}
    for name, embeddings, tokens, mask, head in (
        ("mep_visual", visual, output.visual, masks[0], heads.predict_visual),
        ("mep_audio", sound, output.audio, masks[1], heads.predict_audio),
    ):
        pool = embeddings.reshape(b * t, d)
        if config.detach_targets:  # candidates are targets, not a path for the stems' gradients
            pool = pool.detach()
        positives = mask.flatten().nonzero().squeeze(1)
        negatives = sample_negatives(
            pool[positives].cpu(),
            positives.cpu(),
            pool.cpu(),
            config.num_negatives,
            config.negatives,
            config.sampling_temperature,
            generator,
            config.hard_fraction,
        )
        losses[name] = info_nce(head(tokens[mask]), pool, positives, negatives.to(pool.device), config.temperature)
    total = losses["mep_visual"] + losses["mep_audio"]
    if config.pair_objective in ("binary", "both"):
        pair_logits = heads.pair(output.summary).squeeze(1)
        losses["pair"] = F.binary_cross_entropy_with_logits(pair_logits, matched)
        losses["pair_accuracy"] = ((pair_logits > 0).float() == matched).float().mean().detach()
        total = total + config.pair_weight * losses["pair"]
    if config.pair_objective in ("contrastive", "both"):
        if output.unimodal_summary is None:
            raise ValueError("the contrastive pair objective needs unimodal summaries (mid or late fusion)")
        visual_summary, audio_summary = output.unimodal_summary.split(d, dim=-1)
        losses["contrastive"], losses["contrastive_accuracy"] = audio_visual_contrastive(
            heads.contrast_visual(visual_summary), heads.contrast_audio(audio_summary), order, config.temperature
        )
        total = total + config.pair_weight * losses["contrastive"]
    losses["total"] = total
    return losses


class MultimodalPretrainingTask(Task):
    """Self-supervised pretraining as a task of the loop: the features are the encoder itself (its
    head, :class:`PretrainHeads`, runs it on masked inputs); nothing is evaluated (``val_set=None``)."""

    name = "multimodal-pretraining"
    metric = "total"

    def features(self, model, batch: dict):
        return model
