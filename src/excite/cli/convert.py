"""``excite convert CHECKPOINT --source SOURCE --model NAME --out FILE``: another codebase's
weights as an excite model's safetensors (or a run directory ``excite eval`` reads)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from excite.cli.options import add_option_flag, option_dict

_SOURCES = ("official-cbam", "timm", "torchvision", "pytorchvideo")
# the stem's first convolution, whose weight tells the input channels
_STEM_KEYS = ("conv1.weight", "conv1.0.weight", "conv1.0.0.weight", "stem.0.weight")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert an official CBAM / timm / torchvision / pytorchvideo checkpoint",
        description=(
            "Read CHECKPOINT (safetensors, or torch.load(weights_only=True): nothing is "
            "unpickled), rename its keys to excite's (see docs/interop.md), load them strictly "
            "into the excite model NAME (every key must fit: one error lists the ones that do "
            "not) and write the model's weights: --out FILE.safetensors, or --out RUN_DIR "
            "(with --data) for a run directory that `excite eval RUN_DIR` evaluates."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the weights file (.pth, .pt, .tar, .pyth, .safetensors)")
    p.add_argument("--source", required=True, choices=_SOURCES, help="the codebase that wrote CHECKPOINT")
    p.add_argument("--model", required=True, help="the excite model it fits (see `excite profile --list`)")
    p.add_argument("--attention", default=None,
                   help="attention family of the checkpoint's blocks, e.g. cbam, se, eca, or none "
                        "(default: the model's own, none for most)")
    add_option_flag(p, "--attention-option", "attention module option, e.g. variant=official")
    add_option_flag(p, "--model-option", "extra create_model keyword, e.g. stem_type=deep")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: read from the checkpoint's fc.weight)")
    p.add_argument("--in-channels", type=int, default=None,
                   help="input channels (default: read from the checkpoint's first convolution)")
    p.add_argument("--spatial-dims", type=int, choices=(1, 2, 3), default=None,
                   help="model rank (default: the model's)")
    p.add_argument("--out", required=True, metavar="FILE.safetensors|RUN_DIR",
                   help="a .safetensors file, or a new run directory (needs --data); never "
                        "overwritten; required")
    p.add_argument("--data", default=None,
                   help="with a run directory: the dataset `excite eval` uses (see `excite datasets`; "
                        "default: none, required for a run directory)")
    p.add_argument("--data-dir", default=None,
                   help="with a run directory: the dataset's folder (default: none)")
    add_option_flag(p, "--data-option", "with a run directory: dataset option, e.g. size=[224,224]")
    p.set_defaults(func=run)


def _infer(converted: dict[str, Any], keys: tuple[str, ...], axis: int) -> int | None:
    for key in keys:
        value = converted.get(key)
        if value is not None and value.ndim > axis:
            return int(value.shape[axis])
    return None


def run(args: argparse.Namespace) -> int:
    import json

    from excite.interop import convert_state_dict, load_checkpoint, load_weights_into
    from excite.layers import attention_factory
    from excite.models import create_model, model_info

    out = Path(args.out)
    if out.exists():
        raise ValueError(f"--out {out} already exists; excite convert never overwrites, pick a new path")
    to_file = out.suffix == ".safetensors"
    if not to_file and args.data is None:
        raise ValueError(
            f"--out {out} is not a .safetensors file, so it is a run directory, which needs "
            "--data (the dataset `excite eval` evaluates on)"
        )
    if to_file and (args.data or args.data_dir or args.data_option):
        raise ValueError("--data, --data-dir and --data-option are for a run directory --out, not a .safetensors file")
    info = model_info(args.model)
    factory = attention_factory(
        info.default_attention if args.attention is None else args.attention,
        **option_dict(args.attention_option),
    )
    model_kwargs = option_dict(args.model_option)
    converted = convert_state_dict(load_checkpoint(args.checkpoint), source=args.source)
    num_classes = args.num_classes or _infer(converted, ("fc.weight",), 0)
    in_channels = args.in_channels or _infer(converted, _STEM_KEYS, 1)
    model = create_model(
        args.model, attention=factory, spatial_dims=args.spatial_dims, **model_kwargs,
        **({"num_classes": num_classes} if num_classes else {}),
        **({"in_channels": in_channels} if in_channels else {}),
    )
    report = load_weights_into(model, converted)
    meta = {
        "source": args.source, "checkpoint": str(args.checkpoint), "model": args.model,
        "attention": json.dumps(factory.to_config()), "model_kwargs": json.dumps(model_kwargs),
    }
    from excite.engine import checkpoint as ckpt

    if to_file:
        ckpt.save_weights(out, model, meta)
        where = str(out)
    else:
        from excite.engine.config import TrainConfig
        from excite.engine.rundir import RunDirectory

        attention = factory.to_config()
        config = TrainConfig.from_dict({
            "model": args.model, "attention": attention["name"],
            "attention_kwargs": attention["options"], "model_kwargs": model_kwargs,
            "data": args.data, "data_dir": args.data_dir,
            "data_options": option_dict(args.data_option), "spatial_dims": args.spatial_dims,
            "out": str(out.parent), "name": out.name,
        })
        run_dir = RunDirectory(out)
        run_dir.create(config)
        ckpt.save_weights(run_dir.best_path, model, meta)
        ckpt.save_weights(run_dir.last_path, model, meta)
        rank = model.spatial_dims
        run_dir.save_summary({
            "status": "converted", "run_dir": str(out), "model": args.model,
            "attention": attention["name"], "source": args.source,
            "checkpoint": str(args.checkpoint), "num_classes": model.num_classes,
            "input_shape": [model.in_channels, *info.input_size.get(rank, (1,) * rank)],
        })
        where = f"{out} (evaluate it with `excite eval {out}`)"
    params = sum(p.numel() for p in model.parameters())
    print(f"converted {len(report.loaded)} tensors ({args.source} -> {args.model}, "
          f"attention {factory.name}, {params:,} parameters) to {where}")
    return 0
