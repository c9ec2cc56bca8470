"""End-to-end cost of attention in a real ``excite train`` epoch: images/s with and without.

    python -m benchmarks.epoch [--model tiny_resnet] [--data moving-shapes]
                               [--attention none se cbam eca] [--epochs 1] [--repeats 2]
    excite bench epoch ...      # the same, from the repository root

Each variant trains the same config (the demo's by default: 800 moving-shapes clips of
1x16x64x64, batch 32) through ``excite.engine.fit`` into a temporary folder, interleaved
over the repeats; the table gives the median training throughput (``summary.json``'s
``train_samples_per_s``: samples over the time spent in training steps) and the overhead
over the variant without attention.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile

import torch

from excite.engine import TrainConfig, fit
from excite.engine.builders import build_splits
from excite.engine.config import DEFAULT_DATA_OPTIONS

from ._stamp import load_average, now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.epoch", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny_resnet")
    parser.add_argument("--data", default="moving-shapes")
    parser.add_argument("--attention", nargs="+", default=["none", "se", "cbam", "eca"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-size", type=int, default=None, help="data option train_size")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    options = dict(DEFAULT_DATA_OPTIONS.get(args.data, {}))
    if args.train_size is not None:
        options["train_size"] = args.train_size
    base = TrainConfig(model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                       data_options=options, quiet=True, device="cpu", attention="none")
    print(f"# {now()} UTC, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.model} on {args.data}, {args.epochs} epoch(s), batch {args.batch_size}, "
          f"repeats={args.repeats}, load average {load_average()}")
    splits = build_splits(base)
    rates: dict[str, list[float]] = {a: [] for a in args.attention}
    with tempfile.TemporaryDirectory() as tmp:
        # one untimed run first: the first fit in a process pays one-off costs (threads,
        # kernel builds, data caches) that would land on whichever variant runs first
        fit(dataclasses.replace(base, out=tmp, name="warm-up"), splits=splits, log=lambda _line: None)
        for repeat in range(args.repeats):
            for attention in args.attention:
                config = dataclasses.replace(base, attention=attention, out=tmp, name=f"{attention}-{repeat}")
                summary = fit(config, splits=splits, log=lambda _line: None)
                rates[attention].append(summary["train_samples_per_s"])
    print(f"| attention | train samples/s (median of {args.repeats}) | vs none |")
    print("|---|---|---|")
    base_rate = statistics.median(rates[args.attention[0]])
    for attention, values in rates.items():
        rate = statistics.median(values)
        print(f"| {attention} | {rate:.1f} | {(base_rate / rate - 1) * 100:+.1f}% time |")
    print(f"# done {now()} UTC, load average {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
