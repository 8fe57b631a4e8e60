"""A small seed study for tests/test_verification.py, run in a process of its own numeric environment.

Two streams of features (an "audio" and a "visual" one) each carry part of the label; a two-tower
network fuses them and trains for a few dozen Adam steps. Each seed changes the initialisation and
the batch order; the data stay the same. Prints ``{seed: test accuracy}`` as JSON.

    python tests/seed_study_worker.py SEEDS [--lr-scale S] [--zero-audio]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn


def data(n: int, generator: torch.Generator):
    audio, visual = torch.randn(n, 16, generator=generator), torch.randn(n, 16, generator=generator)
    w_a, w_v = torch.randn(16, 4, generator=generator), torch.randn(16, 4, generator=generator)
    labels = (audio @ w_a + visual @ w_v).argmax(1)  # both streams decide the class
    return audio, visual, labels


def accuracy(seed: int, lr_scale: float, zero_audio: bool) -> float:
    generator = torch.Generator().manual_seed(1234)  # the same data for every seed
    w = data(1536, generator)
    train, test = [x[:1024] for x in w], [x[1024:] for x in w]
    torch.manual_seed(seed)
    audio_tower, visual_tower = nn.Sequential(nn.Linear(16, 32), nn.GELU()), nn.Sequential(nn.Linear(16, 32), nn.GELU())
    head = nn.Linear(64, 4)
    parameters = [*audio_tower.parameters(), *visual_tower.parameters(), *head.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=3e-3 * lr_scale)

    def forward(audio, visual):
        if zero_audio:
            audio = torch.zeros_like(audio)
        return head(torch.cat([audio_tower(audio), visual_tower(visual)], -1))

    order = torch.Generator().manual_seed(seed)
    for _ in range(3):  # epochs
        for batch in torch.randperm(1024, generator=order).split(32):
            loss = nn.functional.cross_entropy(forward(train[0][batch], train[1][batch]), train[2][batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return (forward(test[0], test[1]).argmax(1) == test[2]).float().mean().item()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--lr-scale", type=float, default=1.0)
    parser.add_argument("--zero-audio", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({seed: accuracy(seed, args.lr_scale, args.zero_audio) for seed in args.seeds}))
