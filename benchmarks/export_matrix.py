"""The full export matrix, one module at a time (docs/export.md).

    python -m benchmarks.export_matrix [--families se,cbam] [--models tiny_resnet,x3d_xs]
                                       [--formats onnx,torchscript] [--ranks 1,2,3] [--device cuda]

Every attention family (``excite.list_attention()``) at every rank, and every registered
model (``excite.list_models()``) at its default rank, exported with ``excite.export`` in
every format; each row is the exporter that ran, the parity check's max relative error
(the artefact against eager on a fresh batch of another size) and ok/FAILED with the
error's first line. The families' weights are randomised first (zero-initialised gates
would make the check trivial). Exit status 1 when any row fails. The test suite
(tests/export/test_export_matrix.py) runs the families together, one export per format,
and every model as an exported program; this script is the complete matrix.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import excite
from benchmarks._stamp import load_average, now
from excite.exporting import FORMATS, SUFFIXES, export
from excite.models import model_info

CHANNELS, SIZE = 16, 6
MODEL_INPUT = {1: (64,), 2: (32, 32), 3: (4, 32, 32)}


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return module.eval()


def _row(kind: str, name: str, rank: int, fmt: str, build, shape, folder: Path, device: str) -> dict:
    row = {"kind": kind, "name": name, "rank": rank, "format": fmt}
    try:
        module = build().to(device)
        x = torch.randn(2, *shape, device=device)
        report = export(module, x, folder / f"{kind}-{name}-{rank}{SUFFIXES[fmt]}", format=fmt)
        row.update(exporter=report.exporter, rel=f"{report.max_rel_err:.1e}", status="ok",
                   note=report.fallback_reason or "")
    except Exception as exc:  # noqa: BLE001 - every failure is a row
        text = str(exc).strip().splitlines()
        row.update(exporter="", rel="", status="FAILED", note=f"{type(exc).__name__}: {text[0] if text else ''}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export_matrix")
    parser.add_argument("--families", default=None, help="comma-separated (default: all registered)")
    parser.add_argument("--models", default=None, help="comma-separated (default: all registered)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--ranks", default="1,2,3", help="ranks for the families")
    parser.add_argument("--device", default="cpu", help="where the eager model runs (cpu, cuda)")
    args = parser.parse_args(argv)
    families = args.families.split(",") if args.families else excite.list_attention()
    models = args.models.split(",") if args.models is not None else excite.list_models()
    models = [m for m in models if m]
    formats = args.formats.split(",")
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"# export matrix, {now()} UTC, load {load_average()}, torch {torch.__version__}, "
          f"device {args.device}")
    print("| kind | name | rank | format | exporter | max rel err | status | note |")
    print("|---|---|---|---|---|---|---|---|")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = []
        for name in families:
            for rank in ranks:
                build = (lambda n=name, r=rank: randomize(excite.create_attention(n, CHANNELS, spatial_dims=r)))
                jobs.append(("attention", name, rank, build, (CHANNELS, *([SIZE] * rank))))
        for name in models:
            rank = model_info(name).default_spatial_dims
            build = (lambda n=name: excite.create_model(n, num_classes=5).eval())
            jobs.append(("model", name, rank, build, (3, *MODEL_INPUT[rank])))
        for kind, name, rank, build, shape in jobs:
            for fmt in formats:
                row = _row(kind, name, rank, fmt, build, shape, folder, args.device)
                failed += row["status"] != "ok"
                print("| " + " | ".join(str(row[k]) for k in
                                        ("kind", "name", "rank", "format", "exporter", "rel", "status", "note"))
                      + " |", flush=True)
                for path in folder.iterdir():
                    path.unlink()
    print(f"\n{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
