"""Table 4's rows at another training budget: learning curves, test accuracy and run time over seeds.

The diagnostic behind chapter 6's budget (outside CI): every row of ``--rows`` trained with every
seed of ``--seeds`` at the given epochs, batch, learning rate (adapters and head alike) and number
of training videos, on the offline SynthAVE splits, in the pinned numerics. Frozen streams are
computed once (avpet_core.models.frozen_tokens), so the frozen row costs seconds.

    .venv/bin/python benchmarks/table4_budget.py --rows table4/none --seeds 0 1 2 3 4 5 6 7 8 9 \
        --epochs 40 --lr 3e-3 --out budget.json

Prints, per row, every seed's test accuracy with the epoch validation picked, the mean, standard
deviation and range, and the validation curve of the first seed; with ``--out`` also writes every
run's per-epoch validation accuracy and training loss as JSON. Paired differences between rows are
printed where two rows share seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

from avpet_core import reproducibility, stats
from avpet_core.experiments import TABLES, RunSettings, datasets, get_experiment, run_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(TABLES["table4"]))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the row's own")
    parser.add_argument("--batch", type=int, default=None, help="default: the row's own")
    parser.add_argument("--lr", type=float, default=None, help="adapters' and head's; default: the row's own")
    parser.add_argument("--train-videos", type=int, default=None, help="default: the experiment's data")
    parser.add_argument("--out", default=None, help="JSON file for every run's curves")
    args = parser.parse_args()

    reproducibility.pin_runtime()
    settings = RunSettings()
    runs, shared = [], {}
    for name in args.rows:
        experiment = get_experiment(name)
        overrides = {"epochs": args.epochs, "batch_size": args.batch, "model_lr": args.lr, "head_lr": args.lr}
        training = replace(experiment.training, **{k: v for k, v in overrides.items() if v is not None})
        data = experiment.data if args.train_videos is None else replace(experiment.data, num_videos=args.train_videos)
        experiment = replace(experiment, training=training, data=data)
        if data not in shared:
            shared[data] = datasets(experiment, settings)
        for seed in args.seeds:
            started = time.perf_counter()
            result = run_experiment(experiment, replace(settings, seed=seed), splits=shared[data])
            runs.append(
                {
                    "row": name,
                    "seed": seed,
                    "test_accuracy": result.test["accuracy"],
                    "best_epoch": result.fit.best.get("epoch"),
                    "val_accuracy": [epoch["val_accuracy"] for epoch in result.fit.history],
                    "train_loss": [epoch["train_loss"] for epoch in result.fit.history],
                    "seconds": time.perf_counter() - started,
                }
            )
            print(
                f"{name} seed {seed}: {100 * runs[-1]['test_accuracy']:.1f}% ({runs[-1]['seconds']:.0f} s)", flush=True
            )
    print(f"\nbudget: {vars(args)}")
    accuracy = {n: {r["seed"]: 100 * r["test_accuracy"] for r in runs if r["row"] == n} for n in args.rows}
    for name, by_seed in accuracy.items():
        values = list(by_seed.values())
        first = next(r for r in runs if r["row"] == name)
        spread = (
            f"sd {statistics.stdev(values):.2f}, range {min(values):.1f}-{max(values):.1f}" if len(values) > 1 else ""
        )
        print(f"{name}: mean {statistics.mean(values):.1f}% {spread}")
        best = [r["best_epoch"] for r in runs if r["row"] == name]
        print(f"  seeds {[round(v, 1) for v in values]}, best epochs {best}")
        print(f"  validation, seed {first['seed']}: {[round(100 * v, 1) for v in first['val_accuracy']]}")
    base = args.rows[0]
    for name in args.rows[1:]:
        seeds = [s for s in accuracy[name] if s in accuracy[base]]
        if len(seeds) > 1:
            gain = [accuracy[name][s] - accuracy[base][s] for s in seeds]
            interval = stats.mean_interval(gain)
            print(
                f"{name} - {base}: {interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}] over {len(seeds)} "
                f"seeds; detectable (80%) {stats.detectable_difference(gain):.1f} points"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"budget": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
