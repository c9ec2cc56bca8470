"""``excite profile NAME``: parameters, multiply-adds and activation memory of a model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from excite.cli.options import add_option_flag, option_dict


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help="count parameters and multiply-adds of a registered model",
        description=(
            "Build a registered model on the meta device and report its parameters, "
            "multiply-adds (conv and linear layers, torch.utils.flop_counter) and the "
            "bytes autograd saves for backward in one training step."
        ),
    )
    p.add_argument("name", nargs="?",
                   help="model name (see `excite profile --list`); no default: required unless --list")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    p.add_argument("--attention", default=None,
                   help="attention family, e.g. se, cbam, eca, or none (default: the model's own, "
                        "none for most; see `excite.list_attention()`)")
    add_option_flag(p, "--attention-option",
                    "attention module option, e.g. variant=official (value parsed as YAML)",
                    deprecated=("--attention-arg",))
    add_option_flag(p, "--model-option",
                    "extra create_model keyword, e.g. stride_in_1x1=true (value parsed as YAML)",
                    deprecated=("--model-arg",))
    p.add_argument(
        "--input", default=None, metavar="CxDIMS",
        help="input shape without the batch, e.g. 3x224x224 or 3x16x112x112 "
             "(default: the model's usual input)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="batch size N")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: 1000; 400 for video models)")
    p.add_argument("--spatial-dims", type=int, default=None, choices=(1, 2, 3),
                   help="rank of the input (default: the model's, or the rank of --input)")
    p.add_argument("--per-layer", action="store_true", help="print the per-layer table")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def parse_input(text: str) -> tuple[int, ...]:
    """``"3x16x112x112"`` → ``(3, 16, 112, 112)``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"--input must look like 3x224x224 (C x spatial sizes), got {text!r}"
        ) from None
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(
            f"--input needs channels and 1 to 3 positive spatial sizes, got {text!r}"
        )
    return dims


def run(args: argparse.Namespace) -> int:
    import torch

    from excite.checks import check_positive_int
    from excite.layers import attention_factory
    from excite.models import create_model, list_models, model_info
    from excite.profiling import profile

    if args.list:
        for name in list_models():
            info = model_info(name)
            print(f"{name:18s} {info.description}")
        return 0
    if args.name is None:
        raise ValueError("give a model name, e.g. `excite profile resnet50` (or --list)")
    check_positive_int(args.batch_size, name="--batch-size")
    info = model_info(args.name)
    kwargs = option_dict(args.model_option)
    attention_kwargs = option_dict(args.attention_option)
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = 400 if info.family in ("video", "x3d") else 1000
    spatial_dims = args.spatial_dims
    if args.input is not None:
        dims = parse_input(args.input)
        rank = len(dims) - 1
        if spatial_dims is not None and spatial_dims != rank:
            raise ValueError(
                f"--input {args.input} has {rank} spatial dims but --spatial-dims is "
                f"{spatial_dims}"
            )
        spatial_dims = rank
        in_channels = dims[0]
        shape = (args.batch_size, *dims)
    else:
        in_channels = 3
        rank = info.default_spatial_dims if spatial_dims is None else spatial_dims
        shape = (args.batch_size, in_channels, *info.input_size.get(rank, ()))
    # one object for "which attention": the flag, or the model's own default (X3D's SE)
    attention = attention_factory(
        info.default_attention if args.attention is None else args.attention, **attention_kwargs
    )
    with torch.device("meta"):
        model = create_model(
            args.name,
            attention=attention,
            num_classes=num_classes,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            **kwargs,
        )
    if len(shape) != model.spatial_dims + 2:  # a rank the registry has no default for
        raise ValueError(f"give --input for {args.name} at spatial_dims={model.spatial_dims}")
    result = profile(model, shape)
    if args.json:
        data = result.to_dict(per_layer=args.per_layer)
        data["model"] = args.name
        data["attention"] = attention.name
        data["attention_kwargs"] = attention.options
        data["model_kwargs"] = kwargs
        data["num_classes"] = num_classes
        print(json.dumps(data, indent=2))
        return 0
    title = args.name + ("" if attention.is_none else f" + {attention.name}")
    extras = {**kwargs, **{f"attention.{k}": v for k, v in attention.options.items()}}
    if extras:
        title += " (" + ", ".join(f"{k}={v}" for k, v in extras.items()) + ")"
    print(title)
    if args.per_layer:
        print(result.table())
        print()
    print(result.summary())
    return 0
