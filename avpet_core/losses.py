"""Contrastive losses shared by the tasks: InfoNCE over given candidates, and the batch-wide
audio-visual InfoNCE.

* :func:`info_nce` — the InfoNCE loss (van den Oord, Li and Vinyals, *Representation Learning with
  Contrastive Predictive Coding*, arXiv 2018): each prediction must pick its positive among it and
  some negatives, by cosine similarity over a temperature. Chapter 8's masked embedding prediction
  (Lee et al., ICLR 2021; :mod:`avpet_core.tasks.multimodal_pretraining`) scores a masked position's
  prediction against the segment embedding it replaced and sampled negatives.
* :func:`audio_visual_contrastive` — InfoNCE across a batch, both ways: each video's visual summary
  must find its own audio among the batch's, and each audio its own video. Chapter 8 uses it as an
  alternative (or addition) to Lee et al.'s correct-pair prediction; a retrieval task scores the
  same way.

Both are plain functions of tensors (no parameters); the projections that feed them belong to the
heads that call them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    predictions: torch.Tensor, pool: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE: each prediction must pick ``pool[positive]`` among it and ``pool[negatives]`` (cosine / T).

    The cosines with the whole pool are computed first and the candidates' columns gathered from
    them; indexing ``pool`` with the candidates instead repeats pool rows, and the backward pass of
    that indexing (an accumulating scatter) made CPU runs with trainable targets differ from one
    execution to the next.

    The loss of van den Oord et al. (arXiv 2018), as the masked embedding prediction of Lee et al.
    (ICLR 2021) uses it.
    """
    candidates = torch.cat([positives.unsqueeze(1), negatives], dim=1)  # (n, k + 1) distinct per row
    cosines = F.normalize(predictions, dim=-1) @ F.normalize(pool, dim=-1).T  # (n, m)
    logits = cosines.gather(1, candidates) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def audio_visual_contrastive(
    visual: torch.Tensor, audio: torch.Tensor, audio_owner: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-wide audio-visual InfoNCE, both ways, and its top-1 retrieval accuracy.

    ``visual`` and ``audio`` ``(B, D)`` are (projected) summaries; ``audio[j]`` comes from video
    ``audio_owner[j]`` (a permutation). Each video's visual summary must pick its own audio among the
    batch's B audio summaries, and each audio its own video (cosine / T).

    InfoNCE (van den Oord et al., arXiv 2018) with the batch's other videos as negatives; in
    chapter 8 the book's alternative to the correct-pair prediction of Lee et al. (ICLR 2021).
    """
    logits = F.normalize(visual, dim=-1) @ F.normalize(audio, dim=-1).T / temperature  # (visual i, audio j)
    own_audio = torch.argsort(audio_owner)  # visual i's audio sits at j with audio_owner[j] == i
    loss = 0.5 * (F.cross_entropy(logits, own_audio) + F.cross_entropy(logits.T, audio_owner))
    return loss, (logits.argmax(1) == own_audio).float().mean().detach()
