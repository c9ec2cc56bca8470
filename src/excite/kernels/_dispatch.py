"""Which implementation the attention modules run: the global default and its resolution."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import native

IMPLS = ("auto", "reference", "fused", "native", "triton")

_default = "auto"


def check_impl(impl: object, *, name: str = "impl") -> str:
    """Return ``impl`` if it is one of :data:`IMPLS`."""
    if not isinstance(impl, str):
        raise TypeError(f"{name} must be one of {list(IMPLS)}, got {impl!r}")
    if impl not in IMPLS:
        raise ValueError(f"{name} must be one of {list(IMPLS)}, got {impl!r}")
    return impl


def set_default_impl(impl: str) -> None:
    """Set the implementation used by modules and functions whose ``impl`` is None.

    Args:
        impl: "auto" (the default: see :func:`resolve_impl`), "reference", "fused",
            "native" (the C++ CPU kernels) or "triton".

    Raises:
        TypeError, ValueError: ``impl`` is not one of :data:`IMPLS`.
    """
    global _default
    _default = check_impl(impl)


def get_default_impl() -> str:
    """The current global default (see :func:`set_default_impl`)."""
    return _default


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
    """Context manager: ``with excite.kernels.use_impl("reference"): ...``."""
    global _default
    previous = _default
    set_default_impl(impl)
    try:
        yield
    finally:
        _default = previous


def _native_available() -> bool:
    return native.available()  # builds the extension on first use


def triton_available() -> bool:
    """True when the optional ``triton`` package is importable."""
    return importlib.util.find_spec("triton") is not None


def triton_usable(x: torch.Tensor) -> bool:
    """Triton can run on ``x``: CUDA tensors, or any tensor under TRITON_INTERPRET=1."""
    if not triton_available():
        return False
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


#: what :func:`execution_mode` can answer
EXECUTION_MODES = ("eager", "compiling", "tracing", "observed")

# devices torch.autocast knows (asking about another, e.g. "meta", raises)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


# torch.compiler.is_exporting (torch >= 2.5; earlier versions cannot be exporting through it)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def execution_mode(x: torch.Tensor) -> str:
    """How the code handling ``x`` is being run; the one predicate behind every "are we
    traced, exported or observed?" decision in excite.

    - "tracing": torch.export, TorchScript (scripting or ``jit.trace``) or ONNX export;
    - "compiling": torch.compile (Dynamo, and the graphs it hands on);
    - "observed": outside compile, ``x`` is a meta tensor or a dispatch mode is active
      (``FlopCounterMode``, fake tensors, a profiler's meta pass, AOT tracing);
    - "eager": none of these.

    :func:`resolve_impl`'s "auto" picks the reference path when "tracing" or "observed"
    (traced graphs and per-layer hooks then see the modules' standard ops); the fused
    path's convolution uses the plain ``conv{d}d`` call whenever the mode is not "eager".
    """
    if (
        _is_exporting()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    ):
        return "tracing"
    if torch.compiler.is_compiling():
        return "compiling"
    if x.device.type == "meta" or _get_current_dispatch_mode() is not None:
        return "observed"
    return "eager"


def autocast_enabled(x: torch.Tensor) -> bool:
    """True inside ``torch.autocast`` for ``x``'s device type."""
    return x.device.type in _AUTOCAST_DEVICES and torch.is_autocast_enabled(x.device.type)


#: below this many elements the channel-only blocks (SE, M_c) run the reference path
#: under "auto": the fused backward's gains are lost in call overhead (docs/benchmarks.md)
CHANNEL_FUSED_MIN_NUMEL = 1 << 20


def resolve_impl(
    impl: str | None, x: torch.Tensor, *, supported: bool = True, kind: str = "spatial"
) -> str:
    """The concrete implementation ("reference", "fused", "native" or "triton") for ``x``.

    "auto" picks:

    1. "reference" when the configuration has no fused form (``supported=False``), while
       exporting/tracing (torch.export, TorchScript, ONNX) and when observed (meta
       tensors or an active dispatch mode such as ``FlopCounterMode``, e.g.
       ``excite.profile``; see :func:`execution_mode`), so per-layer hooks and traced
       graphs see the modules' standard ops;
    2. "triton" for CUDA tensors when triton is installed;
    3. "native" for CPU tensors in eager mode when the C++ kernels are available
       (:mod:`excite.kernels.native`: built on first use; not under torch.compile, which
       cannot trace them): every block, with or without gradients (measured faster
       than the reference and fused paths at the benchmarked shapes, docs/benchmarks.md);
    4. otherwise (no compiler, ``EXCITE_NATIVE=0``, torch.compile, other devices):
       "reference" for the channel-only blocks (``kind="channel"``: SE, M_c) on CPU in
       float16/bfloat16 or below :data:`CHANNEL_FUSED_MIN_NUMEL` elements, and "fused"
       for everything else.

    Args:
        impl: a name from :data:`IMPLS`, or None for the global default.
        x: the input (its device decides between Triton and the fused PyTorch path).
        supported: False when the module's configuration has no fused form (an
            activation given as a custom class, training-mode BatchNorm, ...).
        kind: "channel" for the channel-only blocks (SE, CBAM's M_c), "spatial" for
            blocks with the spatial module (M_s, CBAM). On CPU "auto" runs the fused
            channel-only path only for float32/float64 inputs of at least
            :data:`CHANNEL_FUSED_MIN_NUMEL` elements, where it measured faster; the
            spatial blocks were faster fused at every benchmarked shape and dtype.

    Raises:
        ValueError: "fused"/"native"/"triton" was asked for a configuration or device
            that cannot run it.
    """
    impl = _default if impl is None else check_impl(impl)
    if impl == "reference":
        return impl
    if impl == "auto":
        if not supported:
            return "reference"
        mode = execution_mode(x)
        if mode in ("tracing", "observed"):
            return "reference"
        if x.is_cuda and triton_available():
            return "triton"
        if mode == "eager" and x.device.type == "cpu" and _native_available():
            return "native"
        # Measured on CPU (docs/benchmarks.md): fused CBAM beats the reference at every
        # benchmarked shape and dtype; fused SE only in float32 on large tensors.
        if kind == "channel" and (
            x.dtype in (torch.float16, torch.bfloat16) or x.numel() < CHANNEL_FUSED_MIN_NUMEL
        ):
            return "reference"
        return "fused"
    if not supported:
        raise ValueError(
            f"impl={impl!r} is not available for this configuration (custom activation "
            "class, training-mode BatchNorm or an arrangement without a fused form); "
            "use impl='auto' or 'reference'"
        )
    if impl == "native":
        mode = execution_mode(x)
        if x.device.type != "cpu" or mode != "eager":
            raise ValueError(
                f"impl='native' runs CPU tensors in eager mode, got a tensor on {x.device} "
                f"({mode}); use impl='auto'"
            )
        if not _native_available():
            raise ValueError(f"impl='native': the native CPU kernels are {native.status()}")
    if impl == "triton":
        if not triton_available():
            from excite.errors import require

            require("triton", extra="triton", purpose="impl='triton'")
        if not triton_usable(x):
            raise ValueError(
                "impl='triton' needs a CUDA tensor (or TRITON_INTERPRET=1 for the CPU "
                f"interpreter), got a tensor on {x.device}"
            )
    return impl
