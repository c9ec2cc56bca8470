"""``excite eval RUN_DIR``: accuracy, top-5, per-class accuracy and confusion matrix.

The reports go to ``RUN_DIR/eval-DATA-CHECKPOINT[-HASH]/`` (HASH: of the data, model and
attention options that differ from the run's), never over an evaluation with other
options; its ``metrics.json`` records every option (see
:func:`excite.engine.evaluate.evaluate_run`).
"""

from __future__ import annotations

import argparse

from excite.cli.options import add_option_flag, option_dict


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained run",
        description="Evaluate a run's weights on its validation split (or another dataset's) "
        "and write per_class.csv, confusion.csv, confusion.png and metrics.json (with the "
        "options used) into RUN_DIR/eval-DATA-CHECKPOINT[-HASH]/, where HASH identifies "
        "data, model or attention options that differ from the run's. An earlier evaluation "
        "with other options is never overwritten (the next free name -2, -3, ... is used).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `excite train`")
    p.add_argument("--data", help="evaluate on this dataset instead of the run's (default: the run's)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder holding a file-backed dataset (default: the run's)")
    add_option_flag(p, "--data-option",
                    "dataset option; on the run's dataset it updates the run's options "
                    "(default: the run's)")
    add_option_flag(p, "--model-option",
                    "create_model keyword that updates the run's; the weights must still fit "
                    "(default: the run's)")
    add_option_flag(p, "--attention-option",
                    "attention option that updates the run's, e.g. impl=reference "
                    "(default: the run's)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which weights: best validation accuracy or the last epoch's")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="evaluation batch size (default: the run's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (CUDA when available), cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from excite.engine import reports
    from excite.engine.evaluate import evaluate_run

    reports.plotting_available()  # warns before evaluating when confusion.png cannot be drawn
    result, out = evaluate_run(
        args.run_dir, data=args.data, data_dir=args.data_dir, checkpoint=args.checkpoint,
        batch_size=args.batch_size, device=args.device,
        data_options=option_dict(args.data_option), model_options=option_dict(args.model_option),
        attention_options=option_dict(args.attention_option),
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
