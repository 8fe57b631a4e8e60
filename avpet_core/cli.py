"""The ``avpet`` command: one command line for what the notebooks do.

    avpet --version
    avpet params   [--backbone NAME] [--json]      parameter counts, built without downloading weights
    avpet pretrain [--retrain] [--json]            train-or-load the offline micro-ViT, report its accuracy

Errors print one line on stderr and exit with status 2; ``--json`` prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

import avpet_core
from avpet_core.backbones import MICRO_VIT, BackboneError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avpet", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"avpet {avpet_core.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    params = commands.add_parser("params", help="count trainable / frozen parameters of a model")
    params.add_argument("--backbone", default=MICRO_VIT, help=f"timm ViT name or {MICRO_VIT!r} (default)")
    params.add_argument("--adapter", default="none", choices=["none"], help="adapter method (none: the frozen backbone)")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(run=_params)

    pretrain = commands.add_parser("pretrain", help="train-or-load the micro-ViT on procedural images")
    pretrain.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")
    pretrain.add_argument("--json", action="store_true", help="print one JSON object")
    pretrain.set_defaults(run=_pretrain)
    return parser


def _params(args: argparse.Namespace) -> dict:
    from avpet_core.backbones import create_backbone
    from avpet_core.params import count_parameters, millions

    model = create_backbone(args.backbone, pretrained=False, freeze=True)
    counts = count_parameters(model)
    result = {"backbone": args.backbone, "adapter": 0, "method": args.adapter, **counts.as_dict()}
    if not args.json:
        print(f"backbone   {args.backbone}")
        print(f"adapter    {args.adapter}: {millions(0)}")
        print(f"trainable  {millions(counts.trainable)}")
        print(f"frozen     {millions(counts.frozen)}")
        print(f"total      {millions(counts.total)}")
    return result


def _pretrain(args: argparse.Namespace) -> dict:
    from avpet_core.pretrain import PretrainConfig, cache_paths, pretrained_micro_vit

    model = pretrained_micro_vit(retrain=args.retrain, progress=not args.json)
    record = model.pretraining
    result = {
        "test_accuracy": record["test_accuracy"],
        "train_seconds": record["train_seconds"],
        "history": record["history"],
        "weights": str(cache_paths(PretrainConfig())[0]),
    }
    if not args.json:
        print(f"micro-ViT test accuracy {record['test_accuracy']:.3f} after {record['train_seconds']:.0f} s of training")
        print(f"weights: {result['weights']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result = args.run(args)
    except (BackboneError, ValueError, OSError) as err:
        print(f"avpet {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
