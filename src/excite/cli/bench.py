"""``excite bench``: run the benchmark scripts of a source checkout (benchmarks/).

    excite bench attention [--shapes 32,256,28,28 ...] [--dtypes float32 bfloat16] ...
    excite bench training [--models resnet18 r3d_18] [--repeats 3]
    excite bench inference [--repeats 15]      # inference vs textbook, a copy, resnet50 batch 1
    excite bench epoch [--model tiny_resnet]   # images/s of a real excite train epoch, with/without
    excite bench gpu [--tiny --device cpu]     # the one-run GPU benchmark

The scripts live outside the installed package (they import the textbook baselines);
run this from the repository root. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUITES = ("attention", "training", "inference", "epoch", "gpu")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time SE/CBAM: textbook vs torch.compile vs fused (needs a source checkout)",
        description="Run a benchmark script of a source checkout, from the repository root: "
        "`excite bench SUITE ARGS...` is `python -m benchmarks.SUITE ARGS...` "
        "(`excite bench SUITE --help` lists the script's own flags). See docs/benchmarks.md.",
    )
    p.add_argument("suite", choices=SUITES, metavar="SUITE",
                   help="attention: the attention blocks on their own; training: training steps of "
                   "backbones; inference: inference and per-call overhead; epoch: a real excite train "
                   "epoch with and without attention; gpu: the one-run GPU benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="the script's own flags, passed unchanged (default: none, the script's defaults)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from excite.errors import ExciteError

    if not os.path.isfile(os.path.join("benchmarks", f"{args.suite}.py")):
        raise ExciteError(
            "excite bench runs the scripts in benchmarks/ of a source checkout; "
            f"run it from the repository root (no benchmarks/{args.suite}.py in {os.getcwd()})"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(f"benchmarks.{args.suite}")
    return int(module.main(args.args) or 0)
