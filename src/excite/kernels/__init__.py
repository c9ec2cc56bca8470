"""Fused fast paths for the attention modules, behind one seam.

Functions over (x, weights) with an ``impl`` switch:

- ``"reference"``: standard autograd ops (:mod:`excite.kernels.reference`).
- ``"fused"``: :mod:`excite.kernels.fused` — one :class:`torch.autograd.Function` per
  block, saving only the input, the small gates and argmax indices, with an analytic
  backward. Works on any device and under ``torch.compile(fullgraph=True)``.
- ``"native"``: :mod:`excite.kernels.native_functions` — the fused path's equations as
  C++ CPU kernels (:mod:`excite.kernels.native`, compiled on first use and cached;
  unavailable without a compiler or with ``EXCITE_NATIVE=0``), one C++ call per block
  and pass (inference: one call in all).
- ``"triton"``: :mod:`excite.kernels.triton_kernels` (optional extra ``triton``; CUDA,
  or the CPU interpreter with ``TRITON_INTERPRET=1``).
- ``"auto"`` (default), :func:`resolve_impl`'s rule: the reference path while
  exporting/tracing (torch.export, TorchScript, ONNX), when observed (meta tensors, an
  active dispatch mode such as ``FlopCounterMode``) and for configurations without a
  fused form; Triton for CUDA tensors when triton is installed; the native kernels for
  CPU tensors in eager mode when they are available (every block, with or without
  gradients, see :func:`resolve_impl`); otherwise on CPU the reference
  path for the channel-only blocks (SE, M_c) in float16/bfloat16 or below
  :data:`CHANNEL_FUSED_MIN_NUMEL` elements (where it measured faster), and the fused
  path for everything else (CBAM and M_s at every shape and dtype).

``None`` means the global default, set with :func:`set_default_impl` or temporarily
with ``with use_impl("reference"): ...``.

The functions here validate every argument, resolve ``impl`` and call
:mod:`excite.kernels.unchecked`; the attention modules check their input once
themselves and call :mod:`~excite.kernels.unchecked` directly. Inputs follow one rule
(:func:`check_values`): floating point, and no zero-size dimension but the batch (an
empty batch gives an empty result).

Weights follow ``torch.nn``: ``w1`` (C/r, C) and ``w2`` (C, C/r) as in ``nn.Linear``,
``weight`` (1, P, *k) as in ``nn.Conv{d}d(P, 1, k)`` with odd k. Names map to the papers:
SE (Hu et al. 2018) ``s = gate(W2 act(W1 z))``; CBAM (Woo et al. 2018) M_c, M_s.
Activation names are the rows of :data:`ACTIVATIONS` (:mod:`excite.kernels.activations`).
"""

from __future__ import annotations

import torch

from . import unchecked
from ._dispatch import (
    CHANNEL_FUSED_MIN_NUMEL,
    EXECUTION_MODES,
    IMPLS,
    autocast_enabled,
    check_impl,
    execution_mode,
    get_default_impl,
    resolve_impl,
    set_default_impl,
    triton_available,
    use_impl,
)
from .activations import ACTIVATIONS, activation_name

__all__ = [
    "ACTIVATIONS",
    "CHANNEL_FUSED_MIN_NUMEL",
    "EXECUTION_MODES",
    "IMPLS",
    "activation_name",
    "autocast_enabled",
    "cbam",
    "channel_attention",
    "check_impl",
    "check_values",
    "execution_mode",
    "get_default_impl",
    "resolve_impl",
    "set_default_impl",
    "spatial_attention",
    "squeeze_excite",
    "triton_available",
    "unchecked",
    "use_impl",
]

_POOLS = ("avg", "max")


def check_values(x: torch.Tensor, *, name: str = "x") -> None:
    """The rule every attention input follows, whatever its shape rule.

    Args:
        x: an (N, C, *spatial) tensor.
        name: how errors call it ("x", "SqueezeExcite input x").

    Raises:
        TypeError: ``x`` is not floating point (integer, bool and complex tensors).
        ValueError: the channel or a spatial dimension is 0 (only N may be 0: an empty
            batch gives an empty result).
    """
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {x.dtype}"
        )
    if 0 in x.shape[1:]:
        raise ValueError(
            f"{name} must have non-empty channel and spatial dims (only the batch dim N "
            f"may be 0), got shape {tuple(x.shape)}"
        )


def _check_x(x: object) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 3 or x.ndim > 5:
        raise ValueError(f"x must have shape (N, C, *spatial) with 3, 4 or 5 dims, got {tuple(x.shape)}")
    check_values(x)


def _check_pools(pools: object, *, name: str) -> tuple[str, ...]:
    if isinstance(pools, str):
        pools = (pools,)
    if (
        not isinstance(pools, (tuple, list))
        or not pools
        or any(p not in _POOLS for p in pools)
        or len(set(pools)) != len(pools)
    ):
        raise ValueError(f"{name} must be distinct names from {list(_POOLS)}, got {pools!r}")
    return tuple(pools)


def _check_act(value: object, *, name: str) -> str:
    if value not in ACTIVATIONS:
        raise ValueError(f"{name} must be one of {list(ACTIVATIONS)}, got {value!r}")
    return value  # type: ignore[return-value]


def _check_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> None:
    c = x.shape[1]
    if w1.ndim != 2 or w1.shape[1] != c:
        raise ValueError(f"w1 must have shape (hidden, {c}) for x with C={c}, got {tuple(w1.shape)}")
    if w2.ndim != 2 or w2.shape != (c, w1.shape[0]):
        raise ValueError(f"w2 must have shape ({c}, {w1.shape[0]}), got {tuple(w2.shape)}")


def _check_conv(x: torch.Tensor, weight: torch.Tensor, pools: tuple[str, ...]) -> None:
    want = (1, len(pools))
    if weight.ndim != x.ndim or tuple(weight.shape[:2]) != want or any(k % 2 == 0 for k in weight.shape[2:]):
        raise ValueError(
            f"weight must have shape (1, {len(pools)}, *k) with {x.ndim - 2} odd kernel sizes "
            f"for x of shape {tuple(x.shape)}, got {tuple(weight.shape)}"
        )


def _check_affine(scale, shift):
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift must be given together (or both None)")


def squeeze_excite(x, w1, b1, w2, b2, *, activation="relu", gate="sigmoid", impl=None):
    """SE (Hu et al. 2018, eq. 2-4): ``x * gate(W2 act(W1 mean(x) + b1) + b2)``.

    Args:
        x: (N, C, *spatial) with 1-3 spatial dims.
        w1, b1: W1 (C/r, C) and its bias (C/r,) or None.
        w2, b2: W2 (C, C/r) and its bias (C,) or None.
        activation, gate: names from :data:`ACTIVATIONS` (delta and sigma).
        impl: see the module docstring; None = global default.

    Returns:
        Tensor of the shape and dtype of ``x``.
    """
    return channel_attention(
        x, w1, b1, w2, b2, pools=("avg",), activation=activation, gate=gate, impl=impl
    )


def channel_attention(
    x, w1, b1, w2, b2, *, pools=("avg", "max"), activation="relu", gate="sigmoid", impl=None
):
    """CBAM's channel module (Woo et al. 2018, eq. 2): ``x * gate(sum_p MLP(pool_p(x)))``.

    Args: as :func:`squeeze_excite`, plus ``pools`` ("avg" and/or "max").
    """
    _check_x(x)
    pools = _check_pools(pools, name="pools")
    act, gate = _check_act(activation, name="activation"), _check_act(gate, name="gate")
    _check_mlp(x, w1, w2)
    return unchecked.channel_attention(
        x, w1, b1, w2, b2, pools=pools, activation=act, gate=gate,
        impl=resolve_impl(impl, x, kind="channel"),
    )


def spatial_attention(
    x, weight, *, pools=("avg", "max"), gate="sigmoid", scale=None, shift=None, impl=None
):
    """CBAM's spatial module (Woo et al. 2018, eq. 3): ``x * gate(conv([pools over C]))``.

    Args:
        x: (N, C, *spatial).
        weight: the k^d kernel, (1, len(pools), *k), odd k, 'same' padding, no bias.
        pools: the channel-pooled maps in concatenation order ("avg", "max").
        gate: sigma, a name from :data:`ACTIVATIONS`.
        scale, shift: optional 1-element affine after the conv (a frozen BatchNorm).
        impl: see the module docstring.
    """
    _check_x(x)
    pools = _check_pools(pools, name="pools")
    gate = _check_act(gate, name="gate")
    _check_conv(x, weight, pools)
    _check_affine(scale, shift)
    return unchecked.spatial_attention(
        x, weight, pools=pools, gate=gate, scale=scale, shift=shift, impl=resolve_impl(impl, x)
    )


def cbam(
    x,
    w1,
    b1,
    w2,
    b2,
    weight,
    *,
    channel_pools=("avg", "max"),
    spatial_pools=("avg", "max"),
    activation="relu",
    gate="sigmoid",
    scale=None,
    shift=None,
    impl=None,
):
    """CBAM, channel then spatial (Woo et al. 2018, eq. 1): ``F'' = M_s(F') ⊙ F'``,
    ``F' = M_c(F) ⊙ F``. Arguments as :func:`channel_attention` and
    :func:`spatial_attention`; ``gate`` is used by both modules.
    """
    _check_x(x)
    cp = _check_pools(channel_pools, name="channel_pools")
    sp = _check_pools(spatial_pools, name="spatial_pools")
    act, gate = _check_act(activation, name="activation"), _check_act(gate, name="gate")
    _check_mlp(x, w1, w2)
    _check_conv(x, weight, sp)
    _check_affine(scale, shift)
    return unchecked.cbam(
        x, w1, b1, w2, b2, weight, channel_pools=cp, spatial_pools=sp, activation=act,
        gate=gate, scale=scale, shift=shift, impl=resolve_impl(impl, x),
    )
