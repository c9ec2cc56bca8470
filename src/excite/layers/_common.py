"""Argument checks, activation lookup, the one input check and the channel MLP shared by
the attention modules.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind,
wrong value) with the argument's name, the value received and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from excite import kernels
from excite.checks import check_bool, check_choice, check_number, check_positive_int, make_divisible
from excite.kernels import ACTIVATIONS, activation_name, unchecked

from .rank import global_avg_pool, global_max_pool, ntuple

__all__ = [
    "ACTIVATIONS",
    "GLOBAL_POOLS",
    "ChannelMLP",
    "check_bool",
    "check_channels",
    "check_choice",
    "check_input",
    "check_kernel_size",
    "check_optional_impl",
    "check_number",
    "check_pools",
    "check_positive_int",
    "check_reduction",
    "fused_residual_relu",
    "hidden_width",
    "make_divisible",
    "resolve_activation",
]

def resolve_activation(value: str | type[nn.Module], *, name: str) -> nn.Module:
    """A new activation module from a name in :data:`ACTIVATIONS` (the one activation
    table, :mod:`excite.kernels.activations`) or an ``nn.Module`` class.

    Args:
        value: e.g. ``"relu"``, ``"hard_sigmoid"`` or ``nn.SiLU``.
        name: the argument's name, for error messages (``"activation"``, ``"gate"``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: neither a string nor an ``nn.Module`` subclass.
    """
    if isinstance(value, str):
        row = ACTIVATIONS.get(value.lower())
        if row is None:
            raise ValueError(
                f"{name} must be one of {sorted(ACTIVATIONS)} or an nn.Module class, got {value!r}"
            )
        return row.module()
    if isinstance(value, type) and issubclass(value, nn.Module):
        return value()
    raise TypeError(
        f"{name} must be a name in {sorted(ACTIVATIONS)} or an nn.Module class (not an "
        f"instance), got {value!r}"
    )


def check_optional_impl(impl: object) -> str | None:
    """A module's ``impl`` option: None (follow the global default) or one of
    :data:`excite.kernels.IMPLS`."""
    return None if impl is None else kernels.check_impl(impl)


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
    dtype: torch.dtype | None = None,
) -> None:
    """The one check of an attention module's (N, C, *spatial) input, called once per
    ``forward`` / ``gate`` call. The rules, the same for every family:

    - ``x`` is a ``torch.Tensor`` (else ``TypeError``);
    - rank: ``ndim=None`` accepts any rank >= 3 (channel modules), otherwise exactly
      ``ndim`` (``ValueError``);
    - C == ``channels`` when given (``ValueError``);
    - floating point: integer, bool and complex tensors raise ``TypeError``;
    - no zero-size channel or spatial dim (``ValueError`` naming the shape); an empty
      batch (N = 0) passes, and the module returns an empty tensor of ``x``'s shape
      (and empty gradients);
    - ``dtype`` (the module's parameter dtype, when given): ``x`` has it, as
      ``nn.Linear`` / ``nn.Conv`` require; a mix raises ``TypeError`` naming both
      dtypes, except under ``torch.autocast``, which decides the compute dtype itself.
      So ``module.double()`` runs float64 input, ``module.half()`` float16, for every
      module.

    Args:
        x: the input.
        module: the module's name, for error messages.
        channels: the expected C, or None for any.
        ndim: the expected rank, or None for any rank >= 3.
        dtype: the module's parameter dtype, or None to accept any floating dtype.
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
    kernels.check_values(x, name=f"{module} input x")
    if dtype is not None and x.dtype != dtype and not kernels.autocast_enabled(x):
        raise TypeError(
            f"{module} has {dtype} parameters but input x is {x.dtype}: convert one to the "
            f"other (module.to({x.dtype}) or x.to({dtype})), or run under torch.autocast"
        )


def fused_residual_relu(attention: nn.Module, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor | None:
    """``relu(attention(x) + identity)``, the end of a residual block, as one pass of the
    attention's native kernel — or None, and the block runs ``attention(x)``, the addition
    and its ReLU itself.

    It applies at inference (no gradient needed) on CPU where the attention module has a
    ``residual_relu`` method (SE, CBAM's modules, CBAM channel-spatial) whose native path
    runs, ``identity`` is laid out as ``x``, and no forward hook (the module's own or a
    global one) needs to see the module called; the values are the unfused ones (the
    tests compare them). It saves the attention output's write and its re-reading by the
    addition and the ReLU.
    """
    if torch.is_grad_enabled() and (x.requires_grad or identity.requires_grad):
        return None
    fuse = getattr(attention, "residual_relu", None)
    if fuse is None or attention._forward_hooks or attention._forward_pre_hooks or _global_forward_hooks():
        return None
    return fuse(x, identity)


def _global_forward_hooks() -> bool:
    """True when a global forward (pre-)hook is registered (``nn.modules.module``'s)."""
    module = torch.nn.modules.module
    return bool(getattr(module, "_global_forward_hooks", None) or getattr(module, "_global_forward_pre_hooks", None))


GLOBAL_POOLS = {"avg": global_avg_pool, "max": global_max_pool}


class ChannelMLP(nn.Module):
    """The channel gate shared by SE (Hu et al. 2018, eq. 2-4) and CBAM's M_c (Woo et al.
    2018, eq. 2): one MLP over every globally pooled descriptor, summed, then gated::

        s = gate(sum_p fc2(act(fc1(pool_p(x)))))      y = x ⊙ s

    Subclasses validate their own arguments and pass the results here; this base builds
    ``fc1`` (C → hidden), ``act``, ``fc2`` (hidden → C), ``gate_act`` (in execution order)
    and runs them on the reference path or through :mod:`excite.kernels.unchecked`.
    Composite modules (CBAM, scSE) call ``_gate`` / ``_run`` / ``_forward_with`` of their
    parts, so the input is checked once, by the outer module.

    Args:
        channels: C (already checked).
        hidden: the hidden width C/r (already checked).
        pools: the pooled descriptors in order, names from :data:`GLOBAL_POOLS`.
        bias: biases in both linear layers.
        activation, gate: names or ``nn.Module`` classes (checked here).
        impl: "auto", "reference", "fused", "triton" or None (already checked with
            :func:`check_optional_impl`, first, as every module does).
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        *,
        pools: tuple[str, ...],
        bias: bool,
        activation: str | type[nn.Module],
        gate: str | type[nn.Module],
        impl: str | None,
    ) -> None:
        super().__init__()
        self.impl = impl
        self.channels = channels
        self.pools = pools
        check_bool(bias, name="bias")
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.act = resolve_activation(activation, name="activation")
        self.fc2 = nn.Linear(hidden, channels, bias=bias)
        self.gate_act = resolve_activation(gate, name="gate")

    # Each subclass defines its own ``gate`` and ``forward`` (``self._check(x)``, then
    # ``self._gate(x)`` / ``self._run(x)``): torch.compile counts recompilations per
    # code object, so modules compiled one by one must not share one ``forward``.

    def _check(self, x: torch.Tensor) -> None:
        check_input(x, module=type(self).__name__, channels=self.channels, dtype=self.fc1.weight.dtype)

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel map s, shape (N, C, 1, ..., 1), without the input check."""
        if len(self.pools) == 1:  # SE: one descriptor (N, C)
            logits = self.fc2(self.act(self.fc1(GLOBAL_POOLS[self.pools[0]](x))))
        else:
            z = torch.stack([GLOBAL_POOLS[pool](x) for pool in self.pools])  # (P, N, C)
            logits = self.fc2(self.act(self.fc1(z))).sum(0)  # one shared MLP, summed
        s = self.gate_act(logits)
        return s.reshape(*s.shape, *([1] * (x.ndim - 2)))

    def _kernel_args(self) -> tuple[str, str] | None:
        """(activation, gate) names for the kernels, or None without a fused form."""
        modules = self._modules  # one dict, not two nn.Module attribute look-ups per call
        act, gate = activation_name(modules["act"]), activation_name(modules["gate_act"])
        return None if act is None or gate is None else (act, gate)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` without the input check: choose the implementation once, apply it."""
        args = self._kernel_args()
        which = kernels.resolve_impl(self.impl, x, supported=args is not None, kind="channel")
        return self._forward_with(x, which, args)

    def residual_relu(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor | None:
        """``relu(self(x) + identity)`` in the block's one native pass, or None where that
        does not apply (see :func:`fused_residual_relu`, which residual blocks call)."""
        self._check(x)
        args = self._kernel_args()
        if args is None or kernels.resolve_impl(self.impl, x, kind="channel") != "native":
            return None
        fc1, fc2 = self.fc1, self.fc2
        mlp = (fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.pools, args[0])
        return unchecked.residual_relu(x, identity, mlp=mlp, conv=None, gate=args[1])

    def _forward_with(self, x: torch.Tensor, which: str, args: tuple[str, str] | None) -> torch.Tensor:
        """``x * s`` on the implementation ``which`` (already resolved for ``args``)."""
        if which == "reference" or args is None:
            return x * self._gate(x)
        fc1, fc2 = self.fc1, self.fc2
        return unchecked.channel_attention(
            x, fc1.weight, fc1.bias, fc2.weight, fc2.bias,
            pools=self.pools, activation=args[0], gate=args[1], impl=which,
        )
