"""The kernels' unchecked entry: run a block on an implementation already chosen.

The attention modules check their input once (``excite.layers``' ``check_input``) and
choose the implementation once (:func:`excite.kernels.resolve_impl`), then call one of
these. :mod:`excite.kernels`' public functions validate their arguments, resolve
``impl`` and call the same functions, so both reach the kernels through this one seam::

    module.forward ── check_input ── resolve_impl ──┐
                                                    ├── unchecked.cbam(..., impl=which)
    excite.kernels.cbam ── validate ── resolve_impl ┘        │
                          reference.cbam | fused.cbam | native_functions.cbam | triton_kernels.cbam

Nothing here checks shapes, dtypes or names: wrong arguments fail inside torch. Every
argument is required (``impl`` is "reference", "fused", "native" or "triton", never
"auto" or None); pools and activation names are as in :mod:`excite.kernels`.
"""

from __future__ import annotations

from types import ModuleType

import torch

from . import fused, native_functions, reference

__all__ = ["backend", "cbam", "channel_attention", "residual_relu", "spatial_attention"]


def backend(impl: str) -> ModuleType:
    """The module implementing ``impl``: :mod:`.reference`, :mod:`.fused`,
    :mod:`.native_functions` (the C++ CPU kernels) or :mod:`.triton_kernels` (imported on
    first use: it needs the optional triton)."""
    if impl == "fused":
        return fused
    if impl == "reference":
        return reference
    if impl == "native":
        return native_functions
    if impl == "triton":
        from . import triton_kernels

        return triton_kernels
    raise ValueError(f"impl must be 'reference', 'fused', 'native' or 'triton' here, got {impl!r}")


def channel_attention(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    *,
    pools: tuple[str, ...],
    activation: str,
    gate: str,
    impl: str,
) -> torch.Tensor:
    """SE (``pools=("avg",)``) and CBAM's M_c: ``x * gate(sum_p MLP(pool_p(x)))``."""
    return backend(impl).channel_attention(x, w1, b1, w2, b2, pools, activation, gate)


def spatial_attention(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    pools: tuple[str, ...],
    gate: str,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    impl: str,
) -> torch.Tensor:
    """CBAM's M_s: ``x * gate(affine(conv([pools over C])))``."""
    return backend(impl).spatial_attention(x, weight, scale, shift, pools, gate)


def cbam(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    weight: torch.Tensor,
    *,
    channel_pools: tuple[str, ...],
    spatial_pools: tuple[str, ...],
    activation: str,
    gate: str,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    impl: str,
) -> torch.Tensor:
    """CBAM channel then spatial: ``F'' = M_s(F') ⊙ F'``, ``F' = M_c(F) ⊙ F``."""
    return backend(impl).cbam(
        x, w1, b1, w2, b2, weight, scale, shift, channel_pools, spatial_pools, activation, gate
    )


def residual_relu(
    x: torch.Tensor,
    identity: torch.Tensor,
    *,
    mlp: tuple | None,
    conv: tuple | None,
    gate: str,
) -> torch.Tensor | None:
    """``relu(block(x) + identity)``, the end of a residual block, in the block's one native
    pass; None where that pass does not apply (the caller then runs the block, the addition
    and the relu as usual): a gradient is needed, or ``identity`` is not laid out as ``x``.
    The caller has resolved the implementation to "native". ``mlp`` = (w1, b1, w2, b2,
    pools, act), ``conv`` = (weight, scale, shift, pools), as in
    :func:`excite.kernels.native_functions.block_forward`."""
    weights = (*(mlp[:4] if mlp is not None else ()), *(conv[:3] if conv is not None else ()))
    if native_functions.needs_grad(x, identity, *weights) or not native_functions.fuses_residual(x, identity):
        return None
    return native_functions.block_forward(x, gate, mlp=mlp, conv=conv, residual=identity)
