"""``excite compare``: train attention variants x seeds and tabulate them."""

from __future__ import annotations

import argparse

from excite.cli.train import add_training_arguments, build_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several attention variants and compare them",
        description="Train every attention variant for every seed (skipping runs finished "
        "earlier), then write compare.md, compare.csv and compare.png: final validation "
        "accuracy mean ± std, params, GMACs, training samples/s, step time, peak memory.",
    )
    add_training_arguments(p, with_attention=False)
    p.add_argument("--attention", dest="attention_list", default="none,se,cbam,eca",
                   help="comma-separated attention names (default none,se,cbam,eca)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (seed, seed+1, ...; default 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from excite.engine.compare import run_compare

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    attentions = [a.strip() for a in args.attention_list.split(",") if a.strip()]
    base = build_config(args)
    out = args.out or f"runs/compare-{base.model}-{base.data}"
    run_compare(base, attentions, [base.seed + i for i in range(args.seeds)], out)
    print(f"wrote {out}/compare.md, compare.csv, compare.png")
    return 0
