"""Argument checks, activation lookup and input checks shared by the attention modules.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind,
wrong value) with the argument's name, the value received and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from excite.checks import check_bool, check_choice, check_number, check_positive_int, make_divisible

from .rank import ntuple

__all__ = [
    "ACTIVATIONS",
    "check_bool",
    "check_channels",
    "check_choice",
    "check_input",
    "check_kernel_size",
    "check_number",
    "check_pools",
    "check_positive_int",
    "check_reduction",
    "hidden_width",
    "make_divisible",
    "resolve_activation",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "identity": nn.Identity,
}


def resolve_activation(value: str | type[nn.Module], *, name: str) -> nn.Module:
    """A new activation module from a name in :data:`ACTIVATIONS` or an ``nn.Module`` class.

    Args:
        value: e.g. ``"relu"``, ``"hard_sigmoid"`` or ``nn.SiLU``.
        name: the argument's name, for error messages (``"activation"``, ``"gate"``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: neither a string nor an ``nn.Module`` subclass.
    """
    if isinstance(value, str):
        cls = ACTIVATIONS.get(value.lower())
        if cls is None:
            raise ValueError(
                f"{name} must be one of {sorted(ACTIVATIONS)} or an nn.Module class, got {value!r}"
            )
        return cls()
    if isinstance(value, type) and issubclass(value, nn.Module):
        return value()
    raise TypeError(
        f"{name} must be a name in {sorted(ACTIVATIONS)} or an nn.Module class (not an "
        f"instance), got {value!r}"
    )


def check_channels(channels: object, *, name: str = "channels") -> int:
    """Return ``channels`` if it is a positive int."""
    return check_positive_int(channels, name=name)


def check_reduction(reduction: object, *, name: str = "reduction") -> float:
    """Return the reduction ratio r if it is a finite number > 0 (int or float)."""
    if isinstance(reduction, bool) or not isinstance(reduction, (int, float)):
        raise TypeError(f"{name} must be a number > 0 (the ratio r), got {reduction!r}")
    if not math.isfinite(reduction) or reduction <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (the ratio r), got {reduction!r}")
    return reduction


def hidden_width(
    channels: int,
    reduction: float,
    *,
    module: str,
    divisor: int = 1,
) -> int:
    """The bottleneck width C / r of a channel MLP.

    ``divisor == 1`` gives ``channels // reduction`` (the papers' C/r, e.g. 256 // 16 = 16);
    a larger divisor rounds C / r to a multiple of it (see :func:`make_divisible`).

    Raises:
        ValueError: the width resolves to 0.
    """
    if divisor == 1:
        hidden = int(channels // reduction)
    else:
        hidden = make_divisible(channels / reduction, divisor)
    if hidden < 1:
        raise ValueError(
            f"{module}: channels={channels} with reduction={reduction} leaves "
            f"channels // reduction = {hidden} hidden channels; use reduction <= {channels}"
            + (" or pass hidden_channels" if module == "SqueezeExcite" else "")
        )
    return hidden


def check_pools(pools: object, choices: Sequence[str], *, name: str = "pools") -> tuple[str, ...]:
    """A pool name or a non-empty sequence of distinct pool names from ``choices``."""
    if isinstance(pools, str):
        pools = (pools,)
    if not isinstance(pools, (tuple, list)) or len(pools) == 0:
        raise TypeError(
            f"{name} must be a pool name or a non-empty tuple of names from {list(choices)}, "
            f"got {pools!r}"
        )
    for pool in pools:
        check_choice(pool, choices, name=name)
    if len(set(pools)) != len(pools):
        raise ValueError(f"{name} must not repeat a pool, got {tuple(pools)!r}")
    return tuple(pools)


def check_kernel_size(kernel_size: object, spatial_dims: int, *, name: str = "kernel_size") -> tuple[int, ...]:
    """An odd kernel size >= 1 (int, or a tuple of ``spatial_dims`` ints) as a tuple."""
    sizes = ntuple(kernel_size, spatial_dims, name=name)  # type: ignore[arg-type]
    if any(k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(
            f"{name} must be odd and >= 1 (for 'same' padding), got {kernel_size!r}"
        )
    return sizes


def check_input(
    x: torch.Tensor,
    *,
    module: str,
    channels: int | None,
    ndim: int | None = None,
) -> None:
    """Check an (N, C, *spatial) input's rank and channel count.

    ``ndim=None`` accepts any rank >= 3 (channel modules); otherwise exactly ``ndim``.
    ``channels=None`` accepts any channel count.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{module} expects input x to be a torch.Tensor, got {type(x).__name__}")
    if ndim is None:
        if x.ndim < 3:
            raise ValueError(
                f"{module} expects input x of shape (N, C, *spatial) with at least 3 dims, "
                f"got shape {tuple(x.shape)}"
            )
    elif x.ndim != ndim:
        layout = {3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, T, H, W)"}[ndim]
        raise ValueError(
            f"{module} with spatial_dims={ndim - 2} expects input x of shape {layout} "
            f"({ndim} dims), got shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{module} expects input x with channels={channels} at dim 1, "
            f"got shape {tuple(x.shape)}"
        )
