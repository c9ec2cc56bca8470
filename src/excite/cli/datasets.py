"""``excite datasets [NAME]``: list the datasets, or show one dataset's options."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "datasets",
        help="list datasets (sample shape, classes, description) or show one dataset's options",
        description="List the datasets `excite train --data NAME` accepts. With NAME, show its "
        "options (pass them as --data-option key=value).",
    )
    p.add_argument("name", nargs="?",
                   help="a dataset name: show its options and defaults (default: list all datasets)")
    p.set_defaults(func=run)


def _format_default(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        if all(isinstance(v, int) for v in value):
            return "x".join(str(v) for v in value)
        return ",".join(str(v) for v in value)
    return str(value)


def run(args: argparse.Namespace) -> int:
    from excite.data import list_datasets
    from excite.data.registry import get_spec
    from excite.engine.config import DEFAULT_DATA_OPTIONS

    if args.name is None:
        specs = [get_spec(name) for name in list_datasets()]
        rows = [("NAME", "KIND", "SAMPLE (CxSPATIAL)", "CLASSES", "DESCRIPTION")]
        rows += [(s.name, s.kind, s.shape, s.classes, s.description) for s in specs]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
        print("\n`excite datasets NAME` shows a dataset's options.")
        return 0

    spec = get_spec(args.name)
    print(f"{spec.name} ({spec.kind}): {spec.description}")
    print(f"  sample: {spec.shape}   classes: {spec.classes}")
    if spec.needs_data_dir:
        print("  needs --data-dir (a folder with one subfolder per class)")
    if spec.extras:
        print(f"  needs: {', '.join(spec.extras)} (pip install 'excite[data]')")
    train_defaults = DEFAULT_DATA_OPTIONS.get(spec.name, {})
    print("options (--data-option KEY=VALUE):")
    width = max((len(key) for key in spec.options), default=0)
    for key, option in spec.options.items():
        default = _format_default(option.default)
        if key in train_defaults and train_defaults[key] != option.default:
            default = (f"{_format_default(train_defaults[key])} for excite train, "
                       f"{default} for excite.data.load_splits")
        print(f"  {key.ljust(width)}  default {default}: {option.help}")
        print(f"  {' ' * width}  type: {option.kind.describe()}")
    if any(train_defaults.get(key, option.default) != option.default for key, option in spec.options.items()):
        print("`excite train` (and compare) start from their own defaults for "
              + ", ".join(f"{k}={_format_default(v)}" for k, v in train_defaults.items())
              + "; --data-option overrides them")
    return 0
