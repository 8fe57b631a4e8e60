"""The ``avpet`` command: one command line for what the notebooks do.

    avpet --version
    avpet params   [--backbone NAME] [--adapter {avpea,lavish,houlsby,none}] [--streams {none,audio,visual,both}]
                   [--preset {ave,avqa}] [--json]  parameter counts, built without weights (nothing is downloaded)
    avpet params   --model trimodal [--adapter {lstta,avpea,lavish,...}] [--text-encoder NAME] [--json]
                                                   the same with a frozen language encoder (LSTTA's setting)
    avpet params   --model shared-lowrank [--json]  the shared low-rank multimodal Transformer's sharing table
    avpet train    --experiment NAME [--backbone NAME] [--pretrained | --random-weights]
                   [--data {synth,ave,music-avqa}] [--data-root DIR] [--device cpu|cuda] [--epochs N] [--seed N]
                   [--run-dir DIR] [--resume] [--json]
    avpet reproduce {table1,table2,table4,lstta} [the same settings] [--seeds S ...] [--json]   every row of a table
                                                   (with several seeds: the table over seeds), ours beside the paper's
    avpet pretrain [--retrain] [--json]            train-or-load the offline micro-ViT, report its accuracy
    avpet pretrain --text [--retrain] [--json]     the same for the offline micro text encoder (masked-LM)
    avpet env      [--fingerprint] [--json]        the numeric environment (pins, CPU code paths, threads, known name)
    avpet bench    [--device cpu|cuda] [--backbone NAME] [--batch N] [--repeats N] [--variants A,B] [--compile]
                   [--json]                        step time, clips/s, FLOPs, memory of the adapters
                                                   beside full fine-tuning

Errors print one line on stderr and exit with status 2; ``--json`` prints one JSON document on stdout.

Every command runs in the book's pinned CPU numerics (:mod:`avpet_core.reproducibility`): started
without them, ``avpet`` starts itself again with them before torch loads, so ``avpet reproduce``
prints the numbers the chapters check on any machine. ``--device cuda`` runs and
``AVPET_UNPINNED=1`` keep the machine's own, faster CPU code paths. That is why this module
imports the library inside its functions: nothing that loads torch may run before the restart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import avpet_core
from avpet_core.reproducibility import exec_pinned

PARAMS_MODELS = ("dual-stream", "shared-lowrank", "trimodal")  # what `avpet params --model` counts
MICRO_VIT = "micro_vit"  # avpet_core.backbones.MICRO_VIT, named here so that torch loads after the pins


def _lavish_presets() -> dict:
    from avpet_core.adapters import LAVISH_AVE, LAVISH_AVQA

    return {"ave": LAVISH_AVE, "avqa": LAVISH_AVQA}


def _parser() -> argparse.ArgumentParser:
    from avpet_core.adapters import METHODS
    from avpet_core.models.dual_stream import PLACEMENTS

    parser = argparse.ArgumentParser(prog="avpet", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"avpet {avpet_core.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    params = commands.add_parser("params", help="count trainable / frozen parameters of a model")
    params.add_argument(
        "--model",
        default="dual-stream",
        choices=PARAMS_MODELS,
        help="dual-stream: a ViT with adapters (default); shared-lowrank: the sharing table at the paper's "
        "sizes; trimodal: the ViT for audio and video with a language encoder (LSTTA's setting)",
    )
    params.add_argument(
        "--text-encoder",
        help="trimodal: the language encoder (default micro_text with the micro-ViT, "
        "else bert-base-uncased); counted without weights",
    )
    params.add_argument("--backbone", default=MICRO_VIT, help=f"timm ViT name or {MICRO_VIT!r} (default)")
    params.add_argument(
        "--adapter", default="none", choices=METHODS, help="adapter method (none: the frozen backbone; default)"
    )
    params.add_argument(
        "--streams", default="both", choices=list(PLACEMENTS), help="streams that carry adapters (default both)"
    )
    params.add_argument("--preset", choices=sorted(_lavish_presets()), help="LAVISH preset (default ave)")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(run=_params)

    from avpet_core.experiments import EXPERIMENTS, TABLES

    train = commands.add_parser("train", help="train one named experiment (a row of a reproduced table)")
    train.add_argument("--experiment", required=True, choices=sorted(EXPERIMENTS), help="the row to train")
    _run_settings_arguments(train)
    train.add_argument("--run-dir", help="keep checkpoints, state and logs here (needed for --resume)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    train.set_defaults(run=_train)

    reproduce = commands.add_parser("reproduce", help="train every row of a table and print it beside the paper's")
    reproduce.add_argument("table", choices=sorted(TABLES))
    _run_settings_arguments(reproduce)
    reproduce.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="a seed study: every row with every seed, then the "
        "table over seeds (mean ± 95%% interval, paired gains over the first row, verdicts)",
    )
    reproduce.set_defaults(run=_reproduce)

    pretrain = commands.add_parser(
        "pretrain", help="train-or-load the micro-ViT on procedural images (--text: the micro text encoder)"
    )
    pretrain.add_argument(
        "--text",
        action="store_true",
        help="the offline language encoder instead: masked-language modelling on the synthetic corpus",
    )
    pretrain.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")
    pretrain.add_argument("--json", action="store_true", help="print one JSON object")
    pretrain.set_defaults(run=_pretrain)

    env = commands.add_parser("env", help="the numeric environment checked numbers are made in")
    env.add_argument(
        "--fingerprint",
        action="store_true",
        help="also train the two fingerprint models (seconds) and print their weight hashes",
    )
    env.add_argument("--json", action="store_true", help="print one JSON object")
    env.set_defaults(run=_env)

    bench = commands.add_parser(
        "bench", help="time, FLOPs and memory of the adapters beside the frozen ViT and full fine-tuning"
    )
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument(
        "--backbone", default=MICRO_VIT, help=f"timm ViT name or {MICRO_VIT!r} (default); random weights"
    )
    bench.add_argument("--batch", type=int, help="clips per step (default: 16 micro-ViT / 4 other on CPU, 64 on CUDA)")
    bench.add_argument("--repeats", type=int, help="timed rounds, variants alternating (default 5 on CPU, 20 on CUDA)")
    bench.add_argument("--variants", help="comma-separated rows (default all; their baselines always run)")
    bench.add_argument("--compile", action="store_true", help="torch.compile every model first")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=_bench)
    return parser


def _bench(args: argparse.Namespace) -> dict:
    from avpet_core.bench import BenchConfig, format_report, run_bench

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip()) if args.variants else None
    config = BenchConfig(
        backbone=args.backbone,
        device=args.device,
        batch=args.batch,
        repeats=args.repeats,
        variants=variants,
        compile=args.compile,
    )
    report = run_bench(config, progress=None if args.json else lambda message: print(message, file=sys.stderr))
    if not args.json:
        print(format_report(report))
    return report


def _params(args: argparse.Namespace) -> dict:
    if args.model == "shared-lowrank":
        return _shared_lowrank_params(args)
    if args.model == "trimodal":
        return _trimodal_params(args)
    from avpet_core.adapters import adapter_config
    from avpet_core.params import closed_form_adapter_parameters, count_without_weights, millions, paper_count

    if args.preset is not None and args.adapter != "lavish":
        raise ValueError(f"--preset applies to --adapter lavish only, not {args.adapter!r}")
    config = _lavish_presets()[args.preset or "ave"] if args.adapter == "lavish" else adapter_config(args.adapter)
    counts = count_without_weights(args.backbone, config, args.streams)
    dims = _backbone_dims(args.backbone)
    closed_form = closed_form_adapter_parameters(config, dims["embed_dim"], dims["depth"], args.streams)
    paper = paper_count(args.adapter, args.backbone) if args.streams == "both" and args.preset != "avqa" else None
    description = config.describe(dims["embed_dim"]) if config is not None else "none"
    result = {
        "backbone": args.backbone,
        "method": args.adapter,
        "streams": args.streams,
        "adapter_config": config.as_dict() if config is not None else None,
        **counts.as_dict(),
        "closed_form": closed_form,
        "paper_adapter": round(paper.adapter_m * 1e6) if paper else None,
    }
    if not args.json:
        print(f"backbone   {args.backbone}")
        paper_note = f"; paper {paper.adapter_m}M, {paper.source}" if paper else ""
        print(
            f"adapter    {description} on streams {args.streams}: {millions(counts.model_trained, 3)} "
            f"(closed form {millions(closed_form, 3)}{paper_note})"
        )
        print(f"trainable  {millions(counts.trainable, 3)}")
        print(f"frozen     {millions(counts.frozen, 3)}")
        print(f"total      {millions(counts.total, 3)}")
        print(f"share      {100 * counts.model_trained_share:.2f}% of all parameters are adapter parameters")
    return result


def _trimodal_params(args: argparse.Namespace) -> dict:
    from avpet_core.adapters import StageAdapterConfig, adapter_config
    from avpet_core.params import closed_form_trimodal_parameters, count_trimodal_without_weights, millions

    from avpet_core.profiles import profile_for

    text = args.text_encoder or profile_for(args.backbone).text_encoder
    config = _lavish_presets()[args.preset or "avqa"] if args.adapter == "lavish" else adapter_config(args.adapter)
    counts, shape = count_trimodal_without_weights(args.backbone, text, config, args.streams)
    closed_form = closed_form_trimodal_parameters(config, shape["dims"], shape["stages"], shape["depth"], args.streams)
    widths = shape["dims"] if isinstance(config, StageAdapterConfig) else shape["dims"]["visual"]
    description = "none" if config is None else config.describe(widths)
    result = {
        "model": "trimodal",
        "backbone": args.backbone,
        "text_encoder": text,
        "method": args.adapter,
        "streams": args.streams,
        "adapter_config": config.as_dict() if config is not None else None,
        "widths": shape["dims"],
        "stages": shape["stages"],
        **counts.as_dict(),
        "closed_form": closed_form,
    }
    if not args.json:
        print(
            f"encoders   {args.backbone} (audio and video), {text} (language): widths {shape['dims']}, "
            f"{shape['stages']} stages"
        )
        print(f"adapter    {description}: {millions(counts.model_trained, 3)} (closed form {millions(closed_form, 3)})")
        print(f"frozen     {millions(counts.frozen, 3)}")
        print(f"share      {100 * counts.model_trained_share:.2f}% of all parameters are adapter parameters")
    return result


def _shared_lowrank_params(args: argparse.Namespace) -> dict:
    from avpet_core.models.shared_lowrank import PAPER_TRANSFORMER, transformer_parameter_table
    from avpet_core.params import millions

    if args.backbone != MICRO_VIT or args.adapter != "none" or args.streams != "both" or args.preset is not None:
        raise ValueError("--backbone, --adapter, --streams and --preset apply to --model dual-stream only")
    rows = transformer_parameter_table(PAPER_TRANSFORMER)
    c = PAPER_TRANSFORMER
    result = {
        "model": "shared-lowrank",
        "config": {
            "dim": c.dim,
            "depth": c.depth,
            "heads": c.heads,
            "ffn_dim": c.ffn_dim,
            "rank": c.rank,
            "fusion": c.fusion,
        },
        "counts": "Transformer layers only: six weight matrices with biases and two LayerNorms per distinct layer",
        "rows": rows,
    }
    if not args.json:
        width = max(len(row["variant"]) for row in rows)
        print(
            f"shared low-rank multimodal Transformer, D {c.dim}, L {c.depth}, {c.heads} heads, FFN {c.ffn_dim}, "
            f"{c.fusion} fusion; Transformer weights"
        )
        print(f"{'variant':<{width}}  {'params':>8}  vs no sharing")
        for row in rows:
            change = round(100 * row["reduction"])
            print(f"{row['variant']:<{width}}  {millions(row['parameters']):>8}  {'-' if change else ''}{change}%")
    return result


def _backbone_dims(name: str) -> dict:
    import torch

    from avpet_core.backbones import create_backbone

    with torch.device("meta"):
        vit = create_backbone(name)
    return {"embed_dim": vit.embed_dim, "depth": len(vit.blocks)}


def _run_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default=MICRO_VIT, help=f"timm ViT name or {MICRO_VIT!r} (default)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--pretrained",
        action="store_true",
        help="timm's pretrained weights (downloads; the micro-ViT is always pretrained offline)",
    )
    weights.add_argument("--random-weights", action="store_true", help="no pretrained weights (tests, timing)")
    weights.add_argument("--weights-file", help="a local weights file for the backbone")
    from avpet_core.experiments import DATA_KINDS

    parser.add_argument(
        "--data",
        default="synth",
        choices=list(DATA_KINDS),
        help="synth: SynthAVE or SynthAVQA, by the experiment's task (default); ave or music-avqa: "
        "the real dataset from --data-root",
    )
    parser.add_argument("--data-root", help="dataset directory (for --data ave or music-avqa)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, help="override the experiment's number of epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _settings(args: argparse.Namespace):
    from avpet_core.experiments import RunSettings

    from avpet_core.profiles import profile_for

    pretrained = not args.random_weights if profile_for(args.backbone).local_weights else args.pretrained
    return RunSettings(
        backbone=args.backbone,
        pretrained=pretrained and args.weights_file is None,
        weights_file=args.weights_file,
        data=args.data,
        data_root=args.data_root,
        device=args.device,
        epochs=args.epochs,
        seed=args.seed,
        progress=not args.json,
    )


def _train(args: argparse.Namespace) -> dict:
    from avpet_core.experiments import run_experiment

    result = run_experiment(args.experiment, _settings(args), args.run_dir, resume=args.resume)
    row = result.row()
    metric = row["metric"]
    if not args.json and result.test:
        for epoch in row["history"]:
            val = epoch.get(f"val_{metric}")
            shown = "-" if val is None else f"{val:.3f}"
            print(f"epoch {epoch['epoch']}: train loss {epoch['train_loss']:.3f}, val {metric} {shown}")
        print(
            f"{row['label']}: test {metric} {row[f'test_{metric}']:.3f} ({row['ours_setting']}); "
            f"paper {row['paper']}% ({row['paper_setting']})"
        )
        if "test" in row:  # tasks with more columns (AVQA: Table 2's groups)
            from avpet_core.experiments import format_table

            print(format_table([result]))
    return row


def _reproduce(args: argparse.Namespace) -> dict:
    from avpet_core.experiments import TABLES, format_table, reproduce, run_over_seeds, seed_table

    settings = _settings(args)
    if not args.seeds:
        results = reproduce(args.table, settings)
        if not args.json and all(r.test for r in results):
            print(format_table(results))
        return {"table": args.table, "rows": [r.row() for r in results]}
    names = TABLES[args.table]
    study = run_over_seeds(names, settings, list(dict.fromkeys(args.seeds)))
    if not args.json:
        print(format_table([study[name][args.seeds[0]] for name in names]))
        if len(args.seeds) > 1:
            print()
            print(seed_table(study, baseline=names[0], power=0.8).to_string())
    return {
        "table": args.table,
        "seeds": list(dict.fromkeys(args.seeds)),
        "rows": [run.row() | {"seed": seed} for name in names for seed, run in study[name].items()],
    }


def _pretrain(args: argparse.Namespace) -> dict:
    if args.text:
        return _pretrain_text(args)
    from avpet_core.backbones.micro_vit import PretrainConfig, cache_paths, pretrained_micro_vit

    model = pretrained_micro_vit(retrain=args.retrain, progress=not args.json)
    record = model.pretraining
    result = {
        "test_accuracy": record["test_accuracy"],
        "train_seconds": record["train_seconds"],
        "history": record["history"],
        "weights": str(cache_paths(PretrainConfig())[0]),
    }
    if not args.json:
        print(
            f"micro-ViT test accuracy {record['test_accuracy']:.3f} after {record['train_seconds']:.0f} s of training"
        )
        print(f"weights: {result['weights']}")
    return result


def _pretrain_text(args: argparse.Namespace) -> dict:
    from avpet_core.backbones.micro_text import TextPretrainConfig, cache_paths, pretrained_micro_text

    record = pretrained_micro_text(retrain=args.retrain, progress=not args.json).pretraining
    baseline = record["baseline_most_frequent_word"]
    result = {
        "held_out_accuracy": record["held_out_accuracy"],
        "held_out_accuracy_by_kind": record["held_out_accuracy_by_kind"],
        "baseline_most_frequent_word": baseline,
        "train_seconds": record["train_seconds"],
        "history": record["history"],
        "weights": str(cache_paths(TextPretrainConfig())[0]),
    }
    if not args.json:
        print(
            f"micro text encoder: held-out masked-word accuracy {record['held_out_accuracy']:.3f} "
            f"(always {baseline['word']!r}: {baseline['all']:.3f}) after {record['train_seconds']:.0f} s of training"
        )
        print(f"weights: {result['weights']}")
    return result


def _env(args: argparse.Namespace) -> dict:
    from avpet_core import fingerprint, reproducibility

    environment = {**reproducibility.numeric_environment(), "mkl_branch": reproducibility.mkl_branch()}
    known = fingerprint.known_environment(environment)
    result = {"environment": environment, "known_environment": None if known is None else known.name}
    if args.fingerprint:
        result["fingerprint"] = fingerprint.weights_fingerprint()
        result["matches_known"] = None if known is None else known.fingerprint == result["fingerprint"]
    if not args.json:
        print(reproducibility.describe(environment))
        print(f"MKL branch in use (its verbose log): {environment['mkl_branch']}")
        for name, value in result.get("fingerprint", {}).items():
            print(f"fingerprint {name:9} {value}")
        if known is None:
            print(
                "known environment: none (its CPU vendor, MKL branch, ATen capability and torch match no measured "
                "one): the chapters check their trained numbers statistically here"
            )
        else:
            verdict = {None: "", True: ", hashes match", False: ", hashes DIFFER from the measured ones"}
            print(f"known environment: {known.name}{verdict[result.get('matches_known')]}")
    return result


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line: restart in the pinned numerics unless asked not to
        device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv[:-1] else "cpu"
        if device == "cpu":
            exec_pinned("avpet_core.cli", sys.argv[1:])
    from avpet_core.backbones import BackboneError

    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result = args.run(args)
    except (BackboneError, ValueError, OSError, ModuleNotFoundError) as err:
        print(f"avpet {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.json and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
