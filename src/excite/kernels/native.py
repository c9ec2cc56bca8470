"""Native CPU kernels (C++, ``csrc/attention_cpu.cpp``), compiled on first use.

Eager PyTorch needs a pass over x for every reduction and product of an attention block,
and an ATen call (dispatch, allocation) for every small step; these kernels do a whole
block in one C++ call per pass, in the fewest passes over the full-size tensors:

=========================  ===================================  ===========================
stage                      computes                             passes over full tensors
=========================  ===================================  ===========================
``global_pools``           mean and max over S (+ argmax)       1 read of x
``gated_channel_pools``    mean and max over C of x * M_c       1 read of x
``apply``                  (x * M_c) * M_s                      1 read, 1 write
``grad_stats``             sum_c M_c dy x, sum_s dy x M_s       1 read of dy and x
``maps_grad_dot``          the maps' share of dL/dM_c           1 read of x
``grad_input``             dx from the small gradients          1 read of dy, 1 write
=========================  ===================================  ===========================

``block_forward`` (inference: no gradient needed) runs the first three and everything
between them (the channel MLP, the 'same' convolution of the maps, the gates) in one
call; ``block_train_forward`` does the same and keeps what the backward needs;
``block_backward`` runs the last three with the gates', convolution's and MLP's
gradients in one call. The small steps are loops over plain buffers (a BLAS call for
large MLPs); the convolution is direct, over zero-padded planes.

The extension is built with ``torch.utils.cpp_extension`` the first time a CPU attention
block runs under ``impl="auto"`` or ``"native"`` and cached (``TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``), with AVX2/FMA code generation where PyTorch reports
the CPU capable of it. Without a working compiler, or with ``EXCITE_NATIVE=0`` in the
environment, :func:`available` is False and "auto" keeps the pure-PyTorch fused path.
:func:`status` says which, and why.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["available", "load", "status"]

_SOURCE = Path(__file__).with_name("csrc") / "attention_cpu.cpp"
_lock = threading.Lock()
_module: ModuleType | None = None
_failure: str | None = None


def _disabled() -> bool:
    return os.environ.get("EXCITE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _isa_flags() -> list[str]:
    """AVX2/FMA code generation where this CPU has it (PyTorch's own dispatch says so):
    the loops are vectorised 8 floats wide instead of SSE2's 4. The flags are part of the
    cached build's name, so a cache shared with an older CPU builds its own copy."""
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        return ["-mavx2", "-mfma", "-mf16c"]
    return []


def load() -> ModuleType | None:
    """The compiled extension (building it once), or None when it cannot be had."""
    global _module, _failure
    if _module is not None or _failure is not None:
        return _module
    if _disabled():
        _failure = "disabled by EXCITE_NATIVE=0"
        return None
    with _lock:
        if _module is not None or _failure is not None:
            return _module
        try:
            from torch.utils import cpp_extension

            flags = ["-O3", "-fopenmp", *_isa_flags()]
            digest = hashlib.sha1(_SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:10]
            name = f"excite_attention_cpu_{digest}"
            root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
            build_dir = Path(root, "excite", name)
            build_dir.mkdir(parents=True, exist_ok=True)
            if not (build_dir / f"{name}.so").exists():  # a finished build is reused silently
                print("excite: building the native CPU attention kernels (once; cached)", file=sys.stderr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _module = cpp_extension.load(
                    name=name,
                    sources=[str(_SOURCE)],
                    extra_cflags=flags,
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(build_dir),
                    verbose=False,
                )
        except Exception as exc:  # no compiler, no headers, a failed build: keep the fallback
            first = str(exc).strip().splitlines()
            _failure = f"{type(exc).__name__}: {first[0] if first else exc!r}"
            _module = None
    return _module


def available() -> bool:
    """True when the native kernels are (or can be) loaded on this machine."""
    return load() is not None


def status() -> str:
    """One line: "loaded", or why the native kernels are not used."""
    module = load()
    return "loaded" if module is not None else f"not used ({_failure})"


def usable(x: torch.Tensor) -> bool:
    """The native kernels can run on ``x``: a CPU floating tensor outside tracing/compiling."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
        and not torch.compiler.is_compiling()
        and available()
    )
