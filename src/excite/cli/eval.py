"""``excite eval RUN_DIR``: accuracy, top-5, per-class accuracy and confusion matrix."""

from __future__ import annotations

import argparse

from excite.cli.options import key_value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained run",
        description="Evaluate a run's weights on its validation split (or another dataset's) "
        "and write metrics.json, per_class.csv, confusion.csv and confusion.png into "
        "RUN_DIR/eval-DATA/.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `excite train`")
    p.add_argument("--data", help="evaluate on this dataset instead of the run's")
    p.add_argument("--data-dir", help="folder holding a file-backed dataset")
    p.add_argument("--data-option", action="append", type=key_value, metavar="KEY=VALUE",
                   help="dataset option, repeatable")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from excite.engine.evaluate import evaluate_run

    result, out = evaluate_run(
        args.run_dir, data=args.data, data_dir=args.data_dir, checkpoint=args.checkpoint,
        batch_size=args.batch_size, device=args.device,
        data_options=dict(args.data_option) if args.data_option else None,
    )
    print(f"samples: {result.num_samples}")
    print(f"accuracy: {result.accuracy:.4f}")
    if result.top5 is not None:
        print(f"top-5 accuracy: {result.top5:.4f}")
    print(f"loss: {result.loss:.4f}")
    width = max(len(n) for n in result.class_names)
    print("per-class accuracy:")
    for name, acc in zip(result.class_names, result.per_class_accuracy):
        print(f"  {name:<{width}}  {acc:.4f}")
    print(f"reports written to {out}")
    return 0
