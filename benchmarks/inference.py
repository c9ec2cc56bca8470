"""Inference cost of SE / CBAM: the default path vs the textbook code, a copy, and whole models.

    python -m benchmarks.inference [--repeats 15] [--skip-models]

Everything runs in one process under ``torch.inference_mode()`` with modules in eval
mode, interleaved (each repeat times every variant once), medians after warm-up:

1. module forward, the default path (``impl="auto"``) vs the textbook eager code
   (benchmarks/textbook.py) at batch 1, small maps (7x7, 14x14), C from 16 to 2048,
   1D/2D/3D, float32 and bfloat16; for the large shapes also vs one copy of x
   (``x * 1.0001``: one read and one write);
2. the per-call overhead of a CBAM call on (1, 64, 7, 7): the module's call minus the
   same block run through ``excite.kernels.unchecked`` (input check + dispatch);
3. whole-model batch-1 inference at 224x224: resnet50 without attention, with SE and
   with CBAM (each residual block ending in the attention's native pass, and unfused).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import excite
from excite.kernels import native, unchecked

from ._stamp import load_average, now
from .textbook import TextbookCBAM, TextbookSE

SHAPES = [
    "32,256,28,28", "8,64,112,112", "4,64,16,56,56",  # large (also vs a copy)
    "1,64,112,112", "1,512,7,7", "1,64,7,7", "1,2048,7,7", "1,16,14,14", "1,256,14,14",
    "8,64,4096", "1,128,256", "1,64,8,28,28",
]
LARGE = {"32,256,28,28", "8,64,112,112", "4,64,16,56,56"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def interleaved_times(jobs: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds of every run of every job, every repeat timing each job once."""
    for job in jobs.values():
        for _ in range(warmup):
            job()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():
            start = time.perf_counter()
            job()
            times[key].append(time.perf_counter() - start)
    return times


def interleaved(jobs: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per job, every repeat timing each job once."""
    return {k: statistics.median(v) for k, v in interleaved_times(jobs, repeats, warmup).items()}


def copy_textbook_weights(ours: torch.nn.Module, ref: torch.nn.Module, module: str) -> None:
    with torch.no_grad():
        if module == "se":
            ours.fc1.weight.copy_(ref.fc1.weight)
            ours.fc1.bias.copy_(ref.fc1.bias)
            ours.fc2.weight.copy_(ref.fc2.weight)
            ours.fc2.bias.copy_(ref.fc2.bias)
        else:
            ours.channel.fc1.weight.copy_(ref.mlp[0].weight)
            ours.channel.fc2.weight.copy_(ref.mlp[2].weight)
            ours.spatial.conv.weight.copy_(ref.conv.weight)


def bench_modules(repeats: int) -> None:
    print("\n## Module inference: default path vs textbook eager\n")
    print("| module | shape | dtype | default ms | textbook ms | default / textbook | default / copy |")
    print("|---|---|---|---|---|---|---|")
    for shape_text in SHAPES:
        shape = tuple(int(v) for v in shape_text.split(","))
        c, d = shape[1], len(shape) - 2
        for dname, dtype in DTYPES.items():
            x = torch.randn(shape).to(dtype)
            for module in ("se", "cbam"):
                torch.manual_seed(0)
                ref = (TextbookSE(c) if module == "se" else TextbookCBAM(c, d)).to(dtype).eval()
                ours = excite.create_attention(module, c, spatial_dims=d).to(dtype).eval()
                copy_textbook_weights(ours, ref, module)
                with torch.inference_mode():
                    torch.testing.assert_close(ours(x), ref(x), rtol=2e-2, atol=2e-2)
                    med = interleaved(
                        {"default": lambda: ours(x), "textbook": lambda: ref(x), "copy": lambda: x * 1.0001},
                        repeats,
                    )
                ratio_copy = f"{med['default'] / med['copy']:.2f}" if shape_text in LARGE else "-"
                print(f"| {module} | {shape_text} | {dname} | {med['default'] * 1e3:.3f} | "
                      f"{med['textbook'] * 1e3:.3f} | {med['default'] / med['textbook']:.2f} | {ratio_copy} |",
                      flush=True)


def bench_overhead(repeats: int) -> None:
    print("\n## Per-call overhead of a CBAM call on (1, 64, 7, 7)\n")
    m = excite.CBAM(64).eval()
    x = torch.randn(1, 64, 7, 7)
    ch, sp = m.channel, m.spatial
    impl = excite.kernels.resolve_impl(None, x)

    def direct() -> torch.Tensor:
        return unchecked.cbam(
            x, ch.fc1.weight, ch.fc1.bias, ch.fc2.weight, ch.fc2.bias, sp.conv.weight,
            channel_pools=ch.pools, spatial_pools=sp.pools, activation="relu", gate="sigmoid",
            scale=None, shift=None, impl=impl,
        )

    with torch.inference_mode():
        med = interleaved({"module": lambda: m(x), "unchecked": direct}, repeats * 20, warmup=20)
    print(f"impl {impl}: module call {med['module'] * 1e6:.1f} us, unchecked entry "
          f"{med['unchecked'] * 1e6:.1f} us, overhead {(med['module'] - med['unchecked']) * 1e6:.1f} us")


def bench_models(repeats: int) -> None:
    print("\n## resnet50 inference, batch 1, 3x224x224, eval\n")
    x = torch.randn(1, 3, 224, 224)
    models = {}
    for attention in ("none", "se", "cbam"):
        torch.manual_seed(0)
        models[attention] = excite.create_model("resnet50", attention=attention).eval()
    # the same networks with each block's end unfused (attention, then the addition and its
    # ReLU): a forward pre-hook on an attention module makes its block call it
    for attention in ("se", "cbam"):
        torch.manual_seed(0)
        model = excite.create_model("resnet50", attention=attention).eval()
        for name, module in model.named_modules():
            if name.endswith(".attention"):
                module.register_forward_pre_hook(lambda m, args: None)
        models[f"{attention} (block end unfused)"] = model
    with torch.inference_mode():
        times = interleaved_times({k: (lambda m=m: m(x)) for k, m in models.items()}, repeats, warmup=2)
    med = {k: statistics.median(v) for k, v in times.items()}
    # each repeat ran every model back to back: its own ratio moves least with the load
    paired = {k: statistics.median(t / b for t, b in zip(v, times["none"])) for k, v in times.items()}
    print("| attention | median ms | vs none (medians) | vs none (median of paired ratios) |")
    print("|---|---|---|---|")
    for k, t in med.items():
        print(f"| {k} | {t * 1e3:.1f} | {(t / med['none'] - 1) * 100:+.1f}% | {(paired[k] - 1) * 100:+.1f}% |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-modules", action="store_true")
    args = parser.parse_args(argv)
    print(f"# {now()} UTC, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native kernels {native.status()}, repeats={args.repeats}, "
          f"load average {load_average()}")
    if not args.skip_modules:
        bench_modules(args.repeats)
    bench_overhead(args.repeats)
    if not args.skip_models:
        bench_models(args.repeats)
    print(f"\n# done {now()} UTC, load average {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
