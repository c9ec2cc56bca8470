"""``excite train``: train a model with attention on a dataset, write a run directory.

Every field of :class:`~excite.engine.config.TrainConfig` is a flag, generated from the
dataclass and its one-line documentation (:data:`~excite.engine.config.FIELD_DOCS`):
``batch_size`` is ``--batch-size``, a true/false field is a switch with a ``--no-`` form,
the option mappings are the shared ``--data-option`` / ``--model-option`` /
``--attention-option KEY=VALUE`` flags. Precedence: built-in defaults < ``--config
file.yaml`` < flags on the command line; ``--print-config`` prints the result as YAML
and exits. ``--resume RUN_DIR`` continues an interrupted run from its saved state (only
the fields in ``RESUME_OVERRIDABLE`` may change; a finished run says so and exits 0).
Under ``torchrun --nproc-per-node=N -m excite train ...`` training uses DDP.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from excite.cli.options import add_option_flag
from excite.engine.config import DEFAULT_DATA_OPTIONS, FIELD_DOCS, TrainConfig

#: The KEY=VALUE flag of each mapping field.
OPTION_FLAGS = {"data_options": "--data-option", "model_kwargs": "--model-option",
                "attention_kwargs": "--attention-option"}


def _flag(name: str) -> str:
    return OPTION_FLAGS.get(name, "--" + name.replace("_", "-"))


def _dest(name: str) -> str:
    """Where argparse stores field ``name``'s flag."""
    return _flag(name)[2:].replace("-", "_")


def _shown(value: Any) -> str:
    if value is None or value == {} or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _base_type(hint: Any) -> Any:
    """``X`` for ``X | None``; the hint itself otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def add_config_flags(p: argparse.ArgumentParser, *, skip: Collection[str] = (),
                     helps: Mapping[str, str] | None = None) -> None:
    """One flag per :class:`TrainConfig` field (but ``skip``), with its help and default.

    Every flag defaults to ``None`` ("not given"), so that a ``--config`` file's value
    is kept unless the flag is given; the help shows the dataclass default (or the
    field's :class:`~excite.engine.config.FieldDoc` ``default`` text).

    Args:
        p: the subcommand's parser.
        skip: fields that get no flag (``compare`` sets ``attention`` and ``name`` itself).
        helps: help texts that replace a field's (default included) in this command.
    """
    helps = dict(helps or {})
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        if name in skip:
            continue
        doc = FIELD_DOCS.get(name)
        text = doc.help if doc is not None else "(undocumented field)"
        value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        shown = doc.default if doc is not None and doc.default is not None else _shown(value)
        hint = _base_type(hints[name])
        origin = typing.get_origin(hint) or hint
        if name in helps:
            full = helps[name]
        elif name == "data_options":
            demo = "; ".join(f"{d}: " + ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                                   for k, v in opts.items())
                             for d, opts in DEFAULT_DATA_OPTIONS.items())
            full = f"{text} (default: none; {demo})"
        else:
            full = f"{text} (default: {shown})"
        if name in OPTION_FLAGS:
            add_option_flag(p, OPTION_FLAGS[name], full)
        elif origin is bool:
            p.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=full)
        elif origin in (list, tuple):
            (item,) = typing.get_args(hint) or (str,)
            p.add_argument(_flag(name), action="append", type=item, default=None,
                           metavar=doc.metavar if doc and doc.metavar else "VALUE",
                           help=full if "repeatable" in full else f"{full}; repeatable")
        else:
            kind = origin if origin in (int, float, str) else str
            choices = doc.choices if doc is not None else None
            p.add_argument(_flag(name), type=kind, default=None, choices=choices,
                           metavar=None if choices else (doc.metavar if doc else None), help=full)


def add_training_arguments(p: argparse.ArgumentParser, *, skip: Collection[str] = (),
                           helps: Mapping[str, str] | None = None) -> None:
    """``--config``, ``--print-config`` and the :func:`add_config_flags` of ``train`` and
    ``compare``."""
    p.add_argument("--config", metavar="FILE",
                   help="YAML file of config keys (the field names; flags override it) (default: none)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML (defaults < --config < flags) and exit")
    add_config_flags(p, skip=skip, helps=helps)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config values given on the command line (flags left out are not included)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, _dest(field.name), None)
        if value is not None:
            values[field.name] = dict(value) if field.name in OPTION_FLAGS else value
    return values


def build_config(args: argparse.Namespace, *, defaults: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < ``--config`` file < command-line flags -> a validated TrainConfig."""
    from excite.engine.config import load_yaml

    values: dict[str, Any] = dict(defaults or {})
    if args.config:
        values.update({k.replace("-", "_"): v for k, v in load_yaml(args.config).items()})
    cli = overrides_from_args(args)
    for key in OPTION_FLAGS:  # merge option maps key by key
        if key in cli and isinstance(values.get(key), dict):
            cli[key] = {**values[key], **cli[key]}
    values.update(cli)
    data = values.get("data", TrainConfig.data)
    values["data_options"] = {**DEFAULT_DATA_OPTIONS.get(data, {}), **values.get("data_options", {})}
    return TrainConfig.from_dict(values)


def check_out_folder(path: str | Path, *, flag: str = "--out") -> None:
    """Raise ``ValueError`` when ``path``, or the nearest existing folder above it, is
    not a folder (``--out`` naming a file)."""
    for part in (Path(path), *Path(path).parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == Path(path) else f"is inside {part}, which is a file"
                raise ValueError(f"{flag} {path} {what}, not a folder; give a folder for the runs")
            return


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model with attention on a dataset",
        description="Train a model with attention on a dataset and write a run directory "
        "(config.yaml, metrics.csv, summary.json, curves.png, weights, resumable state).",
    )
    add_training_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its saved state (default: none, a new run)")
    p.set_defaults(func=run)


def finished_summary(run_dir: str | Path, config: TrainConfig) -> dict[str, Any] | None:
    """The run's summary when it has finished all of ``config.epochs``, else ``None``."""
    from excite.engine.rundir import RunDirectory

    summary = RunDirectory(run_dir).read_summary()
    if summary is None or summary.get("status") != "finished":
        return None
    return summary if int(summary.get("epochs_done") or 0) >= config.epochs else None


def run(args: argparse.Namespace) -> int:
    from excite.engine import reports
    from excite.engine.config import dump_yaml
    from excite.engine.train import fit, resolve_resume

    if args.resume:
        if args.config:
            raise ValueError("--config cannot be combined with --resume (the run keeps its config)")
        config = resolve_resume(args.resume, overrides_from_args(args))
    else:
        config = build_config(args)
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    check_out_folder(config.out)
    if args.resume and (done := finished_summary(args.resume, config)) is not None:
        print(f"{args.resume} is finished: all {config.epochs} epochs are done, nothing to train "
              f"(train it longer with --resume {args.resume} --epochs N)")
        _report(done)
        return 0
    reports.plotting_available()  # warns now, not after the last epoch, when plots cannot be drawn
    if args.resume:
        summary = fit(config, run_dir=args.resume, resume=True)
    else:
        summary = fit(config)  # claims OUT/NAME atomically (-2, -3, ... for a taken default name)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    _report(summary)
    return 0


def _report(summary: Mapping[str, Any]) -> None:
    best, done = summary["best_val_acc"], summary["epochs_done"]
    print(
        f"validation accuracy: {summary['final_val_acc']:.4f} (best {best:.4f} at epoch "
        f"{summary['best_epoch']}; chance {summary['chance_acc']:.4f}) after "
        f"{done} epoch{'' if done == 1 else 's'} in "
        f"{summary['wall_time_s']:.1f}s; run dir {summary['run_dir']}"
    )
