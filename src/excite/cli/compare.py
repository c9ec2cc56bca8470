"""``excite compare``: train attention variants x seeds and tabulate them.

Takes the training flags of ``excite train`` (generated from ``TrainConfig``) except
``--attention`` (here a comma-separated list) and ``--name`` (each run is
``ATTENTION-sSEED``); ``--print-config`` prints the base config every run starts from.
"""

from __future__ import annotations

import argparse

import yaml

from excite.cli.train import add_training_arguments, build_config, check_out_folder

OUT_HELP = ("folder of the comparison: one run directory per variant and seed "
            "(OUT/ATTENTION-sSEED/; a finished run with the same config is reused, an "
            "interrupted one resumed) and the tables and plot (compare.md, compare.csv, "
            "compare.png) (default: runs/compare-MODEL-DATA)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several attention variants and compare them",
        description="Train every attention variant for every seed (skipping runs finished "
        "earlier), then write compare.md, compare.csv and compare.png: final validation "
        "accuracy mean ± std (and every seed), validation accuracy per epoch, params, GMACs, "
        "training samples/s, step time, peak memory.",
    )
    add_training_arguments(p, skip=("attention", "name"), helps={"out": OUT_HELP})
    p.add_argument("--attention", dest="attention_list", default="none,se,cbam,eca",
                   help="comma-separated attention names (default: none,se,cbam,eca)")
    p.add_argument("--seeds", type=int, default=3,
                   help="number of seeds: seed, seed+1, ... (default: 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from excite.engine import reports
    from excite.engine.compare import run_compare

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    attentions = [a.strip() for a in args.attention_list.split(",") if a.strip()]
    base = build_config(args)
    out = args.out or f"runs/compare-{base.model}-{base.data}"
    seeds = [base.seed + i for i in range(args.seeds)]
    if args.print_config:  # loadable with --config (attention and name are set per run)
        shared = {k: v for k, v in base.to_dict().items() if k not in ("attention", "name")}
        print(f"# excite compare: attention {','.join(attentions)} x seeds "
              f"{', '.join(map(str, seeds))} into {out}/ATTENTION-sSEED\n"
              "# every run uses this config with its own attention and seed\n"
              + yaml.safe_dump(shared, sort_keys=False), end="")
        return 0
    check_out_folder(out)
    reports.plotting_available()  # warns now, not after the last run, when plots cannot be drawn
    run_compare(base, attentions, seeds, out)
    print(f"wrote {out}/compare.md, compare.csv, compare.png")
    return 0
