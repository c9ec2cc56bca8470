"""Micro-benchmarks behind the fused path's design choices (docs/benchmarks.md).

    python -m benchmarks.spatial_conv [--repeats 9]

For the 2→1 channel 'same' spatial convolution of CBAM's maps: forward, input
gradient and weight gradient, textbook (conv / aten.convolution_backward) against the
fused path's (3D by frames; the input gradient as a forward conv with the flipped
kernel). And the pooling kernels: max with indices vs amax, over the spatial axis and
over the channel axis. Interleaved, median in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from excite.kernels import ops


def _aten_grad(g, x, w, mask):
    d = x.ndim - 2
    pad = [k // 2 for k in w.shape[2:]]
    return torch.ops.aten.convolution_backward(g, x, w, None, [1] * d, pad, [1] * d, False, [0] * d, 1, mask)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spatial_conv")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    jobs = {}
    for shape in [(32, 256, 28, 28), (8, 64, 112, 112), (4, 64, 16, 56, 56)]:
        n, c, *sp = shape
        d = len(sp)
        conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
        m = torch.randn(n, 2, *sp)
        w = torch.randn(1, 2, *([7] * d))
        g = torch.randn(n, 1, *sp)
        x3 = torch.randn(n, c, int(torch.tensor(sp).prod()))
        key = "x".join(map(str, shape))
        jobs[(key, "conv forward: textbook")] = lambda m=m, w=w, conv=conv: conv(m, w, padding=3)
        jobs[(key, "conv forward: fused")] = lambda m=m, w=w: ops.conv_same(m, w)
        jobs[(key, "input grad: convolution_backward")] = lambda g=g, m=m, w=w: _aten_grad(g, m, w, [True, False, False])
        jobs[(key, "input grad: flipped-kernel conv")] = lambda g=g, w=w: ops.conv_same_input_grad(g, w)
        jobs[(key, "weight grad: convolution_backward")] = lambda g=g, m=m, w=w: _aten_grad(g, m, w, [False, True, False])
        jobs[(key, "weight grad: fused")] = lambda g=g, m=m, w=w: ops.conv_same_weight_grad(m, g, w)
        jobs[(key, "pool over S: amax")] = lambda x3=x3: x3.amax(2)
        jobs[(key, "pool over S: max with indices")] = lambda x3=x3: x3.max(2)
        jobs[(key, "pool over C: amax")] = lambda x3=x3: x3.amax(1)
        jobs[(key, "pool over C: max with indices")] = lambda x3=x3: x3.max(1)
        jobs[(key, "pool over C: mean")] = lambda x3=x3: x3.mean(1)
        jobs[(key, "copy of x")] = lambda x3=x3: x3.clone()
    for job in jobs.values():
        job()
    times = {k: [] for k in jobs}
    for _ in range(args.repeats):
        for k, job in jobs.items():
            start = time.perf_counter()
            job()
            times[k].append(time.perf_counter() - start)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, repeats={args.repeats}")
    print("| shape (x) | operation | median ms |")
    print("|---|---|---|")
    for (key, name), v in times.items():
        print(f"| {key} | {name} | {statistics.median(v) * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
