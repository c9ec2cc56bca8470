"""``excite export RUN_DIR|MODEL``: ONNX, torch.export or TorchScript, checked for parity."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from excite.cli.options import add_option_flag, option_dict

# excite.exporting.FORMATS, spelled here so that building the parser imports no torch
FORMATS = ("onnx", "exported-program", "torchscript")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a run or a model (ONNX, torch.export, TorchScript) and check its parity",
        description=(
            "Export a trained run (its best or last weights) or a registered model, then run "
            "the exported file and the model on a fresh random input of another batch size "
            "and compare (max abs and relative error; onnxruntime for ONNX). A relative "
            "error above --rtol is an error (exit 2) and leaves no file behind."
        ),
    )
    p.add_argument("source", metavar="RUN_DIR|MODEL",
                   help="a run directory from `excite train`, or a model name (see `excite profile --list`)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="what to write")
    p.add_argument("--input-shape", default=None, metavar="C,D1[,D2[,D3]]",
                   help="input shape without the batch, e.g. 3,224,224 or 1,16,64,64 (a run "
                        "directory supplies its own; required for a model name)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="the file to write (default for a run: RUN_DIR/<checkpoint>.onnx, .pt2 or "
                        ".pt; required for a model name)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"),
                   help="which weights of a run to export")
    p.add_argument("--batch-size", type=int, default=2, help="batch of the example input")
    p.add_argument("--static-batch", action="store_true",
                   help="fix the batch size in the exported graph (default: dynamic batch)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="parity tolerance on max |exported - eager| / max |eager|")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--attention", default=None,
                   help="for a model name: attention family, e.g. cbam (default: the model's own)")
    add_option_flag(p, "--attention-option", "for a model name: attention module option, e.g. reduction=8")
    add_option_flag(p, "--model-option", "for a model name: extra create_model keyword")
    p.add_argument("--num-classes", type=int, default=None,
                   help="for a model name: classifier outputs (default 1000; 400 for video models)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def parse_shape(text: str, *, flag: str = "--input-shape") -> tuple[int, ...]:
    """``"1,16,64,64"`` -> ``(1, 16, 64, 64)``: channels and 1 to 3 positive spatial sizes."""
    parts = [p.strip() for p in text.split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{flag} must look like 3,224,224 (C then 1 to 3 spatial sizes), got {text!r}") from None
    if not 2 <= len(dims) <= 4 or any(d < 1 for d in dims):
        raise ValueError(f"{flag} needs channels and 1 to 3 positive spatial sizes, got {text!r}")
    return dims


def _model_for_name(args: argparse.Namespace, shape: tuple[int, ...] | None) -> Any:
    from excite.models import create_model, list_models, model_info

    if args.source not in list_models():
        raise ValueError(f"{args.source!r} is neither a run directory nor a model name "
                         f"(models: {', '.join(list_models())})")
    info = model_info(args.source)
    if shape is None:
        raise ValueError(f"--input-shape is required to export the model {args.source!r}, "
                         "e.g. --input-shape 3,224,224")
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = 400 if info.family in ("video", "x3d") else 1000
    options: dict[str, Any] = {}
    if args.attention is not None:
        options["attention"] = args.attention
    return create_model(
        args.source, attention_kwargs=option_dict(args.attention_option) or None,
        num_classes=num_classes, in_channels=shape[0], spatial_dims=len(shape) - 1,
        **options, **option_dict(args.model_option),
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from excite.checks import check_positive_int
    from excite.exporting import SUFFIXES, export
    from excite.runs import load_run, run_input_shape

    check_positive_int(args.batch_size, name="--batch-size")
    shape = parse_shape(args.input_shape) if args.input_shape is not None else None
    source = Path(args.source)
    if source.is_dir():
        for flag, value in (("--attention", args.attention), ("--attention-option", args.attention_option),
                            ("--model-option", args.model_option), ("--num-classes", args.num_classes)):
            if value is not None:
                raise ValueError(f"{flag} applies to a model name; a run directory has its own model")
        model, _ = load_run(source, checkpoint=args.checkpoint)
        run_shape = run_input_shape(source)
        if shape is None:
            shape = run_shape
        elif len(shape) != len(run_shape) or shape[0] != run_shape[0]:
            raise ValueError(
                f"--input-shape {args.input_shape} does not fit the run's model, which takes "
                f"{run_shape[0]} channel(s) and {len(run_shape) - 1} spatial axes "
                f"(trained on {','.join(map(str, run_shape))})"
            )
        out = Path(args.out) if args.out else source / f"{args.checkpoint}{SUFFIXES[args.format]}"
    else:
        model = _model_for_name(args, shape)
        if args.out is None:
            raise ValueError(f"--out is required to export the model {args.source!r}, "
                             f"e.g. --out {args.source}{SUFFIXES[args.format]}")
        out = Path(args.out)
    assert shape is not None
    example = torch.randn(args.batch_size, *shape)
    report = export(model, example, out, format=args.format, dynamic_batch=not args.static_batch,
                    opset=args.opset, rtol=args.rtol, overwrite=args.overwrite)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0
