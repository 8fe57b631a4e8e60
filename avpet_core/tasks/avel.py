"""Audio-visual event localisation (AVE; AV-PEA Tables 1 and 4): one label per one-second segment.

* data: SynthAVE offline (:mod:`avpet_core.data.synthetic`), or AVE from ``--data-root``
  (:mod:`avpet_core.data.ave`), at the backbone's sizes;
* heads: ``cmbs`` (the head of AV-PEA's Tables 1 and 4) and ``segment`` (LAVISH's), both reading
  ``batch["labels"]`` ``(B, T)`` with background last;
* metric: the segment accuracy over all segments (AVE's metric);
* printed table: our test accuracy and adapter size beside the paper's number.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from avpet_core.data.ave import AVE, AVE_MICRO, AVEMediaConfig
from avpet_core.data.synthetic import SYNTH_AVE_VITB, SynthAVE
from avpet_core.evaluation import accuracy
from avpet_core.tasks.base import Profile, Task, TaskError


class AVELTask(Task):
    """Audio-visual event localisation: one label per segment; metric: segment accuracy."""

    name = "avel"
    synthetic = "SynthAVE"
    data_kinds = ("synth", "ave")

    def metrics(self, predictions: torch.Tensor, batches: list[dict]) -> dict[str, float]:
        """``{"accuracy": ...}``: the share of predictions equal to the batches' ``labels``, in order."""
        return {"accuracy": accuracy(predictions, torch.cat([b["labels"] for b in batches]))}

    def datasets(self, experiment, settings, profile: Profile):
        """SynthAVE or AVE (from ``settings.data_root``) at the backbone's sizes."""
        if settings.data == "synth":
            config = experiment.data if profile.offline else replace(
                experiment.data, image_size=SYNTH_AVE_VITB.image_size, fbank=SYNTH_AVE_VITB.fbank)
            return tuple(SynthAVE(config, split, cache="memory") for split in ("train", "val", "test"))
        if settings.data == "ave":
            if settings.data_root is None:
                raise TaskError("data 'ave' needs --data-root, the AVE directory with Annotations.txt")
            media = AVE_MICRO if profile.offline else AVEMediaConfig()
            return tuple(AVE(settings.data_root, split, media=media) for split in ("train", "val", "test"))
        raise TaskError(f"unknown data {settings.data!r} for an AVEL experiment; choose 'synth' or 'ave'")

    def table_lines(self, results: list) -> list[str]:
        lines = [f"{'row':34} {'adapter':>9} {'test acc (ours)':>16} {'paper':>7}"]
        for r in results:
            ours = f"{100 * r.test['accuracy']:.1f}%"
            paper = f"{r.experiment.paper:.2f}%" if r.experiment.paper is not None else "-"
            lines.append(f"{r.experiment.label:34} {r.adapter / 1e6:8.3f}M {ours:>16} {paper:>7}")
        return lines
