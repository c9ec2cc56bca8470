"""Standalone SE / CBAM benchmark: textbook vs torch.compile vs the fused and native paths.

    python -m benchmarks.attention [--shapes ...] [--dtypes float32 bfloat16]
                                   [--modules se cbam] [--repeats 7] [--no-compile]

Everything runs in one process, interleaved (each repeat times every variant once),
and reports the median after warm-up. For each shape/dtype/module it prints the
training forward (grad enabled), forward+backward, the bytes autograd saves for
backward (saved_tensors_hooks, unique storages, in units of the input's bytes) and the
forward floor: max(3 x bytes / copy bandwidth, 2 k^d MACs per position / matmul rate),
both rates measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from ._stamp import load_average, now

from excite import kernels
from excite.kernels import native as native_kernels

from .textbook import TextbookCBAM, TextbookSE

SHAPES = ["32,256,28,28", "8,64,112,112", "4,64,16,56,56", "2,256,8,14,14"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _timeit(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def copy_bandwidth(numel: int, dtype: torch.dtype, repeats: int = 7) -> float:
    """Bytes/s of ``dst.copy_(src)`` (1 read + 1 write) for a tensor of ``numel``."""
    src = torch.randn(numel).to(dtype)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    t = statistics.median(_timeit(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * src.element_size() / t


def matmul_rate(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """Multiply-adds/s of an n x n x n matmul."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    t = statistics.median(_timeit(lambda: a @ b) for _ in range(repeats))
    return n**3 / t


def saved_bytes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    """Bytes of the unique storages autograd saves for backward in ``fn(x)``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(seen.values())


def _variants(module: str, x: torch.Tensor, compile_: bool) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    c, d = x.shape[1], x.ndim - 2
    if module == "se":
        ref = TextbookSE(c).to(x.dtype)
        w = (ref.fc1.weight, ref.fc1.bias, ref.fc2.weight, ref.fc2.bias)

        def ours(t):
            return kernels.squeeze_excite(t, *w, impl="fused")

        def native(t):
            return kernels.squeeze_excite(t, *w, impl="native")
    else:
        ref = TextbookCBAM(c, d).to(x.dtype)
        w = (ref.mlp[0].weight, None, ref.mlp[2].weight, None, ref.conv.weight)

        def ours(t):
            return kernels.cbam(t, *w, impl="fused")

        def native(t):
            return kernels.cbam(t, *w, impl="native")

    out = {"textbook": ref, "ours": ours}
    if native_kernels.available():
        out["ours-native"] = native
    if compile_:
        # static shapes: every benchmarked shape gets its own specialised graph
        out["textbook+compile"] = torch.compile(ref, fullgraph=True, dynamic=False)
        out["ours+compile"] = torch.compile(ours, fullgraph=True, dynamic=False)
    return out


def bench_case(shape, dtype, module, repeats, compile_, warmup=2):
    torch._dynamo.reset()
    x = torch.randn(shape).to(dtype)
    xg = x.clone().requires_grad_()
    variants = _variants(module, x, compile_)
    dy = torch.randn_like(x)

    def fwd(f):
        return lambda: f(xg)

    def fwd_bwd(f):
        def run():
            out = f(xg)
            out.backward(dy)
            xg.grad = None

        return run

    jobs = {}
    for name, f in variants.items():
        jobs[(name, "fwd")] = fwd(f)
        jobs[(name, "fwd+bwd")] = fwd_bwd(f)
    for job in jobs.values():
        for _ in range(warmup):
            job()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():  # interleaved
            times[key].append(_timeit(job))
    med = {k: statistics.median(v) for k, v in times.items()}
    saved = {name: saved_bytes(f, xg) for name, f in variants.items() if "compile" not in name}

    nbytes = x.numel() * x.element_size()
    bw = copy_bandwidth(x.numel(), dtype)
    rate = matmul_rate(dtype)
    k = 7
    positions = x.numel() // x.shape[1]
    macs = 2 * k ** (x.ndim - 2) * positions if module == "cbam" else 0
    floor = max(3 * nbytes / bw, macs / rate)
    return med, saved, nbytes, floor, bw, rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention", description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="N,C,*spatial")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--modules", nargs="+", default=["se", "cbam"], choices=["se", "cbam"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"# {now()} UTC, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"repeats={args.repeats}, load average {load_average()}"
    )
    print(
        "| module | shape | dtype | floor ms | variant | fwd ms | fwd/floor | fwd+bwd ms | "
        "speed-up fwd+bwd vs textbook | saved for bwd / input |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape_s in args.shapes:
        shape = tuple(int(v) for v in shape_s.split(","))
        for dname in args.dtypes:
            for module in args.modules:
                med, saved, nbytes, floor, bw, rate = bench_case(
                    shape, DTYPES[dname], module, args.repeats, not args.no_compile
                )
                base = med[("textbook", "fwd+bwd")]
                for name in ("textbook", "textbook+compile", "ours", "ours+compile", "ours-native"):
                    if (name, "fwd") not in med:
                        continue
                    f, fb = med[(name, "fwd")], med[(name, "fwd+bwd")]
                    sv = f"{saved[name] / nbytes:.2f}" if name in saved else "-"
                    print(
                        f"| {module} | {shape_s} | {dname} | {floor * 1e3:.2f} | {name} | {f * 1e3:.2f} | "
                        f"{f / floor:.1f} | {fb * 1e3:.2f} | {base / fb:.2f}x | {sv} |"
                    )
                print(
                    f"<!-- copy bandwidth {bw / 1e9:.1f} GB/s, matmul {rate / 1e9:.1f} GMAC/s -->",
                    flush=True,
                )
                sys.stdout.flush()
    print(f"# done {now()} UTC, load average {load_average()}")
    return 0




if __name__ == "__main__":
    raise SystemExit(main())
