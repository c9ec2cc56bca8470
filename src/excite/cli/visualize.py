"""``excite visualize RUN_DIR|MODEL``: attention maps and Grad-CAM pictures of a few samples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from excite.cli.options import add_option_flag, option_dict


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="draw where a run's (or a model's) attention looks, or its Grad-CAM",
        description=(
            "Run a few validation samples through a trained run (or an untrained registered "
            "model) and write labelled pictures: images with each stage's attention map "
            "overlaid, video frame strips and animated GIFs, three mid-slices of volumes, "
            "and the mean channel gate per class (SENet Fig. 6). --method gradcam draws "
            "Grad-CAM on the last stage instead, for any model."
        ),
    )
    p.add_argument("source", metavar="RUN_DIR|MODEL",
                   help="a run directory from `excite train`, or a model name (then --data is required)")
    p.add_argument("--data", default=None,
                   help="dataset whose validation samples to draw (default: the run's; see `excite datasets`)")
    p.add_argument("--data-dir", default=None, help="folder of a file-backed dataset (default: the run's)")
    add_option_flag(p, "--data-option", "dataset option, e.g. frames=8 (default: the run's own)")
    p.add_argument("--samples", type=int, default=8, help="how many samples to draw")
    p.add_argument("--method", default="gates", choices=("gates", "gradcam"),
                   help="gates: the attention maps; gradcam: Grad-CAM on the last stage")
    p.add_argument("--kind", default=None, choices=("signal", "image", "video", "volume"),
                   help="how to draw the samples (default: from the dataset)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the pictures (default: RUN_DIR/visualize-<checkpoint>; "
                        "required for a model name)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which weights of a run")
    p.add_argument("--attention", default=None,
                   help="for a model name: attention family, e.g. cbam (default: the model's own)")
    p.add_argument("--gate-samples", type=int, default=256,
                   help="validation samples averaged per class in channel-gates.png")
    p.add_argument("--overwrite", action="store_true", help="replace pictures already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from excite.models import list_models
    from excite.viz import visualize

    source = Path(args.source)
    if not source.is_dir():
        if args.source not in list_models():
            raise ValueError(f"{args.source!r} is neither a run directory nor a model name "
                             f"(models: {', '.join(list_models())})")
        if args.data is None:
            raise ValueError(f"--data is required to visualize the model {args.source!r}, "
                             "e.g. --data moving-shapes")
        if args.out is None:
            raise ValueError(f"--out is required to visualize the model {args.source!r}")
    result = visualize(
        args.source if not source.is_dir() else source,
        args.out,
        data=args.data,
        data_dir=args.data_dir,
        data_options=option_dict(args.data_option) if args.data_option is not None else None,
        samples=args.samples,
        method=args.method,
        kind=args.kind,
        checkpoint=args.checkpoint,
        attention=args.attention,
        gate_samples=args.gate_samples,
        overwrite=args.overwrite,
    )
    maps = ", ".join(result.maps) or "none (channel gates only)"
    print(f"{result.method} pictures of {result.samples} {result.kind} sample(s); maps: {maps}")
    for path in result.files:
        print(f"wrote {path}")
    return 0
