"""End-to-end training-step overhead of SE and CBAM in real backbones.

    python -m benchmarks.training [--models resnet18 r3d_18] [--repeats 3] [--impls auto]

One process, interleaved: each repeat runs one SGD step (forward, cross-entropy,
backward, update) of every variant - no attention, SE and CBAM, each with the
modules' reference path, the fused path and "auto" (the default: the native C++ kernels
on CPU when they build) - and reports the median step time and the overhead over the
model without attention: of the medians, of the fastest steps, and the median over the
repeats of each repeat's own ratio (its steps ran back to back, so a machine whose load
drifts between repeats moves it least).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ._stamp import load_average, now

import excite

CASES = {
    "resnet18": (16, 3, 224, 224),
    "r3d_18": (4, 3, 16, 112, 112),
    "tiny_resnet": (64, 1, 28, 28),
    "resnet20": (64, 1, 28, 28),
}


class _Floor(torch.nn.Module):
    """The simplest gate in eager PyTorch: ``x * w``, one multiply and one (C, 1, ...)
    parameter where SE computes its gate (autograd then reduces dy * x for dw). A
    reference point for the fixed costs of a module with a parameter, not attention."""

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(channels, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def _floor_model(model: torch.nn.Module, spatial_dims: int) -> torch.nn.Module:
    """``model`` (built with SE) with every SE module replaced by :class:`_Floor`."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, excite.layers.SqueezeExcite):
                setattr(parent, child_name, _Floor(child.channels, spatial_dims))
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--impls", nargs="+", default=["reference", "fused", "auto"],
                        choices=["reference", "fused", "native", "auto"],
                        help="the attention variants' implementations (fewer: more repeats in the same time)")
    parser.add_argument("--floor", action="store_true",
                        help="also time SE's place taken by x * w (one multiply, one parameter, eager): "
                             "the fixed costs of any module with a parameter there")
    args = parser.parse_args(argv)
    print(
        f"# {now()} UTC, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, repeats={args.repeats}, load average {load_average()}"
    )
    print(
        "| model | input | attention | impl | median step s | overhead vs none | min step s | overhead (min) "
        "| overhead (median of paired ratios) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    variants = [(None, "reference")] + [("floor", "-")] * args.floor
    variants += [(a, impl) for a in ("se", "cbam") for impl in args.impls]
    for name in args.models:
        shape = CASES[name]
        torch.manual_seed(0)
        x = torch.randn(shape)
        y = torch.randint(0, 10, (shape[0],))
        steps = {}
        for attention, impl in variants:
            torch.manual_seed(0)
            model = excite.create_model(name, attention="se" if attention == "floor" else attention,
                                        num_classes=10, in_channels=shape[1], spatial_dims=len(shape) - 2)
            if attention == "floor":
                model = _floor_model(model, len(shape) - 2)
            for m in model.modules():
                if hasattr(m, "impl"):
                    m.impl = impl
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()

            steps[(attention, impl)] = step
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for key, step in steps.items():
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        # each repeat times every variant back to back: the ratio within a repeat is the
        # least affected by the machine's load drifting between repeats
        none_times = times[(None, "reference")]
        paired = {k: statistics.median(t / b for t, b in zip(v, none_times)) for k, v in times.items()}
        low = {k: min(v) for k, v in times.items()}
        base = med[(None, "reference")]
        base_low = low[(None, "reference")]
        for (attention, impl), t in med.items():
            label = "none" if attention is None else attention
            shown_impl = "-" if attention is None else impl
            print(
                f"| {name} | {'x'.join(map(str, shape))} | {label} | {shown_impl} | {t:.3f} | "
                f"{(t / base - 1) * 100:+.1f}% | {low[(attention, impl)]:.3f} | "
                f"{(low[(attention, impl)] / base_low - 1) * 100:+.1f}% | "
                f"{(paired[(attention, impl)] - 1) * 100:+.1f}% |",
                flush=True,
            )
    print(f"# done {now()} UTC, load average {load_average()}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
