"""One training step of every Table 4 row, with and without the frozen streams computed once.

    .venv/bin/python benchmarks/table4_steps.py [--steps 20] [--batch 8]

For each row: the model and head as the row builds them (pretrained micro-ViT), one batch of SynthAVE
training videos, and the optimiser step of the training loop (forward, loss, backward, AdamW). The
uncached and the cached step run in alternation, ``--steps`` times each, in one process, so that the
ratio is measured side by side; the median wall time of each is printed with their ratio, and the
time the cached batch takes to assemble (the loader's part). The tokens of the frozen streams are
computed beforehand, once, and that time is printed too (a study pays it once per split).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import default_collate

from avpet_core import reproducibility
from avpet_core.experiments import TABLES, RunSettings, build, datasets, get_experiment, task_of
from avpet_core.models.frozen_tokens import with_frozen_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    reproducibility.pin_runtime()
    settings = RunSettings()
    names = TABLES["table4"]
    train_set = datasets(get_experiment(names[0]), settings)[0]
    print(f"{'row':14} {'uncached ms':>12} {'cached ms':>10} {'ratio':>6} {'batch ms':>9} {'tokens once s':>14}")
    for name in names:
        experiment = get_experiment(name)
        task = task_of(experiment)
        model, head = build(experiment, settings, task.head_sizes(train_set))
        started = time.perf_counter()
        cached_set = with_frozen_tokens(model, train_set)
        once = time.perf_counter() - started
        items = list(range(args.batch))
        parameters = [p for p in (*model.parameters(), *head.parameters()) if p.requires_grad]
        optimiser = torch.optim.AdamW(parameters, lr=1e-3)

        def step(dataset):
            batch = default_collate([dataset[i] for i in items])
            loss = head.loss(head(task.features(model, batch), batch), batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        model.train(), head.train()
        times = {"uncached": [], "cached": [], "batch": []}
        for _ in range(args.steps):
            for label, dataset in (("uncached", train_set), ("cached", cached_set)):
                started = time.perf_counter()
                step(dataset)
                times[label].append(time.perf_counter() - started)
            started = time.perf_counter()
            default_collate([cached_set[i] for i in items])
            times["batch"].append(time.perf_counter() - started)
        median = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(
            f"{name:14} {median['uncached']:12.1f} {median['cached']:10.1f} "
            f"{median['cached'] / median['uncached']:6.2f} {median['batch']:9.1f} {once:14.1f}"
        )


if __name__ == "__main__":
    main()
