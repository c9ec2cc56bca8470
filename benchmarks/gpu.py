"""One-run GPU benchmark: attention modules and whole-model training on one CUDA device.

    python -m benchmarks.gpu                    # the full run (< 5 minutes on one GPU)
    python -m benchmarks.gpu --tiny --device cpu  # the logic on tiny shapes (the test suite)

Everything prints as Markdown tables in one run, every case timed in the same process:

1. SE / CBAM / ECA forward+backward for the "triton", "reference" and ``torch.compile``
   (of the reference module) paths, at the four shapes of docs/benchmarks.md, in float32
   and under bf16 autocast, NC* (contiguous) and channels_last(_3d); median time over the
   repeats and the peak memory of one step (``torch.cuda.max_memory_allocated`` after a
   reset; "-" on the CPU).
2. resnet50 training throughput (images/s; batch 64, bf16 autocast, channels_last,
   SGD) for none / SE / CBAM / ECA. The ECA paper (Wang et al. 2020, Table 2) measured
   1024 / 759 / 472 images/s for none / SE / CBAM on its GPU: CBAM cost 54 % there.
3. r3d_18 training throughput (clips/s; 3x16x112x112 clips) for the same variants.

Triton runs only on CUDA (the module's ``impl="triton"``); on the CPU those rows say "-".
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import excite

from ._stamp import load_average, now

SHAPES = ["32,256,28,28", "8,64,112,112", "4,64,16,56,56", "2,256,8,14,14"]
TINY_SHAPES = ["2,16,8,8", "1,16,4,6,6"]
MODULES = ("se", "cbam", "eca")
VARIANTS = ("none", "se", "cbam", "eca")


@dataclass(frozen=True)
class Settings:
    device: torch.device
    shapes: list[str]
    repeats: int
    warmup: int
    backend: str  # torch.compile backend
    image_model: str
    image_batch: tuple[int, ...]
    clip_model: str
    clip_batch: tuple[int, ...]
    steps: int


def settings(tiny: bool, device: str) -> Settings:
    dev = torch.device(device)
    if tiny:
        return Settings(dev, TINY_SHAPES, repeats=2, warmup=1, backend="eager",
                        image_model="tiny_resnet", image_batch=(4, 3, 32, 32),
                        clip_model="tiny_resnet", clip_batch=(2, 3, 4, 32, 32), steps=2)
    return Settings(dev, SHAPES, repeats=10, warmup=3, backend="inductor",
                    image_model="resnet50", image_batch=(64, 3, 224, 224),
                    clip_model="r3d_18", clip_batch=(8, 3, 16, 112, 112), steps=20)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> tuple[float, str]:
    """(median seconds of ``fn``, peak MB of one call)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    reset_peak(device)
    fn()
    synchronize(device)
    peak = peak_mb(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def memory_format(ndim: int) -> torch.memory_format:
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def module_paths(name: str, channels: int, spatial_dims: int, cfg: Settings) -> dict[str, nn.Module | None]:
    """path -> module (None: the path does not exist for this module or device)."""
    def build(impl: str | None) -> nn.Module:
        kwargs = {} if impl is None else {"impl": impl}
        torch.manual_seed(0)
        return excite.create_attention(name, channels, spatial_dims=spatial_dims, **kwargs).to(cfg.device)

    has_impl = name in ("se", "cbam")
    reference = build("reference" if has_impl else None)
    triton_ok = has_impl and cfg.device.type == "cuda" and excite.kernels.triton_available()
    return {
        "triton": build("triton") if triton_ok else None,
        "reference": reference,
        "compile": torch.compile(build("reference" if has_impl else None), backend=cfg.backend),
    }


def bench_modules(cfg: Settings) -> None:
    print("\n## Attention modules, forward+backward\n")
    print("| module | shape | dtype | layout | path | median ms | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for shape_text in cfg.shapes:
        shape = tuple(int(s) for s in shape_text.split(","))
        for name in MODULES:
            paths = module_paths(name, shape[1], len(shape) - 2, cfg)
            for amp in (False, True):
                for layout in ("contiguous", "channels_last"):
                    x = torch.randn(shape, device=cfg.device)
                    if layout == "channels_last":
                        x = x.contiguous(memory_format=memory_format(x.ndim))
                    x.requires_grad_(True)
                    for path, module in paths.items():
                        if module is None:
                            row = ("-", "-")
                        else:
                            def step(module=module) -> None:
                                with torch.autocast(cfg.device.type, dtype=torch.bfloat16, enabled=amp):
                                    out = module(x)
                                out.float().sum().backward()

                            t, peak = timed(step, cfg.device, cfg.repeats, cfg.warmup)
                            row = (f"{t * 1e3:.3f}", peak)
                        print(f"| {name} | {shape_text} | {'bf16 autocast' if amp else 'float32'} | "
                              f"{layout} | {path} | {row[0]} | {row[1]} |", flush=True)


def bench_training(model_name: str, batch: tuple[int, ...], unit: str, cfg: Settings) -> None:
    print(f"\n## {model_name} training, batch {'x'.join(map(str, batch))}, bf16 autocast, "
          f"{'channels_last' if len(batch) == 4 else 'channels_last_3d'}\n")
    print(f"| attention | {unit}/s | vs none | peak MB |")
    print("|---|---|---|---|")
    x = torch.randn(batch, device=cfg.device).contiguous(memory_format=memory_format(len(batch)))
    y = torch.randint(0, 10, (batch[0],), device=cfg.device)
    base = None
    for variant in VARIANTS:
        torch.manual_seed(0)
        model = excite.create_model(model_name, attention=variant, num_classes=10,
                                    spatial_dims=len(batch) - 2)
        model = model.to(cfg.device, memory_format=memory_format(len(batch)))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(model=model, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(cfg.device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()

        t, peak = timed(step, cfg.device, cfg.steps, cfg.warmup)
        rate = batch[0] / t
        base = rate if base is None else base
        print(f"| {variant} | {rate:.1f} | {(rate / base - 1) * 100:+.1f}% | {peak} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and models (a logic check)")
    parser.add_argument("--skip-modules", action="store_true", help="only the training tables")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available; use --device cpu --tiny for a logic check")
    cfg = settings(args.tiny, args.device)
    name = torch.cuda.get_device_name(cfg.device) if cfg.device.type == "cuda" else "cpu"
    print(f"# {now()} UTC, torch {torch.__version__}, device {name}, "
          f"triton {'yes' if excite.kernels.triton_available() else 'no'}, load average {load_average()}")
    torch.backends.cudnn.benchmark = cfg.device.type == "cuda"
    if not args.skip_modules:
        bench_modules(cfg)
    bench_training(cfg.image_model, cfg.image_batch, "img", cfg)
    bench_training(cfg.clip_model, cfg.clip_batch, "clips", cfg)
    print(f"\n# done {now()} UTC")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
