"""Audio-visual event localisation (AVE; AV-PEA Tables 1 and 4): one label per one-second segment.

* data: SynthAVE offline (:mod:`avpet_core.data.synthetic`), or AVE from ``--data-root``
  (:mod:`avpet_core.data.ave`), at the backbone's sizes;
* heads: ``cmbs`` (the head of AV-PEA's Tables 1 and 4) and ``segment`` (LAVISH's), both reading
  ``batch["labels"]`` ``(B, T)`` with background last;
* metric: the segment accuracy over all segments (AVE's metric);
* printed table: our test accuracy and adapter size beside the paper's number.
"""

from __future__ import annotations

import torch

from avpet_core.data.ave import AVE
from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig
from avpet_core.evaluation import accuracy
from avpet_core.tasks.base import DataRequest, TableRow, Task, TaskError, require


class AVELTask(Task):
    """Audio-visual event localisation: one label per segment; metric: segment accuracy."""

    name = "avel"
    synthetic = "SynthAVE"
    data_kinds = ("synth", "ave")

    def metrics(self, predictions: torch.Tensor, batches: list[dict]) -> dict[str, float]:
        """``{"accuracy": ...}``: the share of predictions equal to the batches' ``labels``, in order."""
        return {"accuracy": accuracy(predictions, torch.cat([b["labels"] for b in batches]))}

    def datasets(self, request: DataRequest):
        """SynthAVE or AVE (from ``request.root``) at the profile's sizes."""
        require(request, SynthAVEConfig, "AVEL")
        if request.kind == "synth":
            config = request.profile.synthetic(request.config)
            return tuple(SynthAVE(config, split, cache="memory") for split in ("train", "val", "test"))
        if request.kind == "ave":
            if request.root is None:
                raise TaskError("data 'ave' needs --data-root, the AVE directory with Annotations.txt")
            media = request.profile.real_media
            return tuple(AVE(request.root, split, media=media) for split in ("train", "val", "test"))
        raise TaskError(f"unknown data {request.kind!r} for an AVEL experiment; choose 'synth' or 'ave'")

    def table_lines(self, rows: list[TableRow]) -> list[str]:
        lines = [f"{'row':34} {'adapter':>9} {'test acc (ours)':>16} {'paper':>7}"]
        for r in rows:
            ours = f"{100 * r.metrics['accuracy']:.1f}%"
            paper = f"{r.paper:.2f}%" if r.paper is not None else "-"
            lines.append(f"{r.label:34} {r.adapter / 1e6:8.3f}M {ours:>16} {paper:>7}")
        return lines
