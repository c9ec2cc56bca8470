"""``excite train``: train a model with attention on a dataset, write a run directory.

Precedence: built-in defaults < ``--config file.yaml`` < flags on the command line.
``--resume RUN_DIR`` continues an interrupted run from its saved state (only
``--epochs``, ``--quiet``, ``--workers``, ``--device`` may change). Under
``torchrun --nproc-per-node=N -m excite train ...`` training uses DDP.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from excite.cli.options import key_value

_DATA_DEFAULT = "moving-shapes"


def add_training_arguments(p: argparse.ArgumentParser, *, with_attention: bool = True) -> None:
    """Flags shared by ``train`` and ``compare`` (default None = "not given")."""
    p.add_argument("--config", metavar="FILE", help="YAML file of options (flags override it)")
    p.add_argument("--model", help="model name (default tiny_resnet; see `excite profile`)")
    if with_attention:
        p.add_argument("--attention", help="attention: none, se, cam, sam, cbam, eca, scse (default cbam)")
    p.add_argument("--data", help=f"dataset name (default {_DATA_DEFAULT}; see `excite datasets`)")
    p.add_argument("--data-dir", help="folder holding a file-backed dataset")
    p.add_argument("--data-option", action="append", type=key_value, metavar="KEY=VALUE",
                   help="dataset option, repeatable (e.g. --data-option train_size=256)")
    p.add_argument("--model-option", action="append", type=key_value, metavar="KEY=VALUE",
                   help="extra create_model keyword, repeatable")
    p.add_argument("--attention-option", action="append", type=key_value, metavar="KEY=VALUE",
                   help="attention module option, repeatable (e.g. --attention-option variant=official)")
    p.add_argument("--strict", action="store_const", const=True,
                   help="stop at the first unreadable data file (default: skip it and count)")
    p.add_argument("--val-fraction", type=float, help="validation share when the data has no test split")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on a seeded random subset of N samples")
    p.add_argument("--val-subset", type=int, metavar="N", help="validate on a seeded random subset of N samples")
    p.add_argument("--spatial-dims", type=int, choices=(1, 2, 3), help="model rank (default: the dataset's)")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch-size", type=int, help="global batch size (split across DDP processes)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--optimizer", choices=("sgd", "adamw"))
    p.add_argument("--schedule", choices=("cosine", "step", "constant"))
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision autocast")
    p.add_argument("--channels-last", action="store_const", const=True, help="channels_last memory format")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--out", help="parent folder of run directories (default runs/)")
    p.add_argument("--quiet", action="store_const", const=True, help="plain log lines, no progress bars")


_NOT_CONFIG = {"config", "data_option", "model_option", "attention_option", "resume", "func", "command", "attention_list",
               "seeds", "name"}


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config values given on the command line (flags left out are not included)."""
    values = {k: v for k, v in vars(args).items() if v is not None and k not in _NOT_CONFIG}
    if getattr(args, "data_option", None):
        values["data_options"] = dict(args.data_option)
    if getattr(args, "model_option", None):
        values["model_kwargs"] = dict(args.model_option)
    if getattr(args, "attention_option", None):
        values["attention_kwargs"] = dict(args.attention_option)
    if getattr(args, "name", None) is not None:
        values["name"] = args.name
    return values


def build_config(args: argparse.Namespace, *, defaults: dict[str, Any] | None = None) -> Any:
    """Defaults < ``--config`` file < command-line flags -> a validated TrainConfig."""
    from excite.engine.config import DEFAULT_DATA_OPTIONS, TrainConfig, load_yaml

    values: dict[str, Any] = dict(defaults or {})
    if args.config:
        values.update({k.replace("-", "_"): v for k, v in load_yaml(args.config).items()})
    cli = overrides_from_args(args)
    for key in ("data_options", "model_kwargs", "attention_kwargs"):  # merge option maps key by key
        if key in cli and isinstance(values.get(key), dict):
            cli[key] = {**values[key], **cli[key]}
    values.update(cli)
    data = values.get("data", TrainConfig.data)
    values["data_options"] = {**DEFAULT_DATA_OPTIONS.get(data, {}), **values.get("data_options", {})}
    return TrainConfig.from_dict(values)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model with attention on a dataset",
        description="Train a model with attention on a dataset and write a run directory "
        "(config.yaml, metrics.csv, summary.json, curves.png, weights, resumable state).",
    )
    add_training_arguments(p)
    p.add_argument("--name", help="run directory name (default MODEL-ATTENTION-DATA-sSEED)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.set_defaults(func=run)


def _new_run_dir(config: Any) -> Path:
    """``out/name``; without ``--name`` a taken default name gets a suffix (-2, -3, ...)."""
    from excite.errors import ExciteError

    base = Path(config.out) / config.run_name
    if config.name is not None:
        if (base / "config.yaml").exists():
            raise ExciteError(f"run directory {base} already exists; continue it with "
                              f"--resume {base} or choose another --name")
        return base
    path, n = base, 1
    while path.exists() and any(path.iterdir()):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run(args: argparse.Namespace) -> int:
    from excite.engine.train import fit, resolve_resume

    if args.resume:
        if args.config:
            raise ValueError("--config cannot be combined with --resume (the run keeps its config)")
        config = resolve_resume(args.resume, overrides_from_args(args))
        summary = fit(config, run_dir=args.resume, resume=True)
    else:
        config = build_config(args)
        summary = fit(config, run_dir=_new_run_dir(config))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best = summary["best_val_acc"]
    print(
        f"validation accuracy: {summary['final_val_acc']:.4f} (best {best:.4f} at epoch "
        f"{summary['best_epoch']}; chance {summary['chance_acc']:.4f}) after "
        f"{summary['epochs_done']} epoch{'' if summary['epochs_done'] == 1 else 's'} in "
        f"{summary['wall_time_s']:.1f}s; run dir {summary['run_dir']}"
    )
    return 0
