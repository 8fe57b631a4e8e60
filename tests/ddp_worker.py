"""Run by tests/test_train.py under ``torchrun``: a tiny AVEL run whose results rank 0 writes as JSON."""

from __future__ import annotations

import json
import sys

import torch

from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig
from avpet_core.heads import SegmentClassifier
from avpet_core.models import build_dual_stream
from avpet_core.tasks import AVELTask
from avpet_core.train import TrainConfig, distributed_context, fit

DATA = SynthAVEConfig(num_videos=8, num_eval_videos=4)
CONFIG = TrainConfig(
    epochs=2, batch_size=4, model_lr=1e-2, head_lr=1e-2, progress=False, eval_batch_size=4, num_threads=1
)


def main(out_path: str) -> None:
    rank, world = distributed_context()
    torch.manual_seed(0)
    model = build_dual_stream("micro_vit", "avpea", "both")
    head = SegmentClassifier(model.embed_dim, DATA.num_classes + 1, hidden=32)
    result = fit(model, head, AVELTask(), SynthAVE(DATA, "train"), SynthAVE(DATA, "val"), CONFIG)
    if rank == 0:
        weights = torch.cat([p.detach().flatten() for p in list(model.adapters.parameters()) + list(head.parameters())])
        with open(out_path, "w") as handle:
            json.dump({"world": world, "history": result.history, "weights": weights.tolist()}, handle)


if __name__ == "__main__":
    main(sys.argv[1])
