"""Selective Kernel attention (Li et al., "Selective Kernel Networks", CVPR 2019)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from excite.checks import make_divisible

from ._common import (
    check_bool,
    check_channels,
    check_input,
    check_kernel_size,
    check_positive_int,
    check_reduction,
    resolve_activation,
)
from .rank import batch_norm_nd, check_spatial_dims, conv_nd, global_avg_pool
from .registry import register_attention
from .timm_keys import rename_prefixes


@register_attention("sk")
class SelectiveKernel(nn.Module):
    """Selective Kernel unit: M convolution branches fused by a softmax over branches.

    Li et al. 2019, Sec. 3.1, eq. 1-6 (Split, Fuse, Select)::

        U_m = delta(BN(F_m(x)))               m = 1..M, F_m a k_m^d convolution (Split)
        s   = GAP(U_1 + ... + U_M)            (N, C)                             (eq. 1-2)
        z   = delta(BN(W s))                  W in R^{d x C}, d = max(C / r, L)   (eq. 3-4)
        a_m = softmax_m(A_m z)                A_m in R^{C x d}, per channel       (eq. 5)
        V   = sum_m a_m ⊙ U_m                                                      (eq. 6)

        x ─┬─ conv k_1 ─ BN ─ relu ─ U_1 ─┬─────────────────────────────────────── ⊙ a_1 ─┐
           └─ conv k_2 ─ BN ─ relu ─ U_2 ─┤                                        ⊙ a_2 ─┴─ Σ ─ V
                                          Σ ─ mean ─ fc (C→d) ─ BN ─ relu ─ select (d→M·C)
                                                                           ─ softmax over M

    Input and output channels are both C, so the unit serves as a block's attention (the
    block's output recombined from M receptive fields) or in place of a k^d convolution.
    ``forward`` is V, not a product with ``gate``. With ``dilate`` (the paper's choice) a
    k-kernel branch is a 3-kernel with dilation (k - 1) / 2: 5 -> 3 dilated 2. At rank d
    the convolutions are d-dimensional; a per-axis kernel such as (1, 5, 5) keeps the
    1-sized axis undilated.

    timm's ``SelectiveKernel(C)`` is ``kernel_sizes=(3, 5), split_input=True,
    reduction=16, divisor=8, min_hidden=1`` (keys: :func:`selective_kernel_from_timm`).

    Args:
        channels: C, input and output channels.
        spatial_dims: d, 1, 2 or 3.
        kernel_sizes: k_m of each branch (at least two), odd ints or d-tuples.
        dilate: build each k > 3 as a dilated 3 (the paper); False uses k itself.
        groups: G, the groups of each branch convolution (the paper's SKNet-50 uses 32).
        reduction: r; d = max(C / r, min_hidden).
        min_hidden: L, the smallest hidden width (32 in the paper).
        divisor: round C / r to a multiple of this (timm's ``make_divisible``); 1 = floor.
        split_input: give branch m only the m-th of M equal channel slices of x (timm's
            variant, fewer weights); the paper feeds all of x to every branch.
        activation: delta, a name ("relu", ...) or an ``nn.Module`` class.

    Attributes:
        branches: the M ``conv`` / ``bn`` / ``act`` branches.
        reduce, reduce_norm, select: W, its BatchNorm, and the stacked A_m (M·C x d).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: fewer than two branches, an even or non-positive kernel, channels
            not divisible by groups (or by M with ``split_input``), or a non-positive
            channels/reduction/min_hidden/divisor/groups.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        kernel_sizes: Sequence[int | tuple[int, ...]] = (3, 5),
        dilate: bool = True,
        groups: int = 1,
        reduction: float = 16,
        min_hidden: int = 32,
        divisor: int = 1,
        split_input: bool = False,
        activation: str | type[nn.Module] = "relu",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if isinstance(kernel_sizes, (str, bytes)) or not isinstance(kernel_sizes, Sequence):
            raise TypeError(
                f"kernel_sizes must be a sequence of at least two kernel sizes (one per "
                f"branch), got {kernel_sizes!r}"
            )
        if len(kernel_sizes) < 2:
            raise ValueError(
                f"kernel_sizes must have at least two branches to select between, got {kernel_sizes!r}"
            )
        kernels = [check_kernel_size(k, spatial_dims, name="kernel_sizes") for k in kernel_sizes]
        self.dilate = check_bool(dilate, name="dilate")
        check_positive_int(groups, name="groups")
        check_reduction(reduction)
        check_positive_int(min_hidden, name="min_hidden")
        check_positive_int(divisor, name="divisor")
        self.split_input = check_bool(split_input, name="split_input")
        self.num_branches = len(kernels)
        branch_in = channels // self.num_branches if split_input else channels
        if split_input and channels % self.num_branches:
            raise ValueError(
                f"channels must be divisible by the {self.num_branches} branches with "
                f"split_input=True, got channels={channels}"
            )
        if branch_in % groups or channels % groups:
            raise ValueError(
                f"groups must divide the branch convolutions' channels ({branch_in} in, "
                f"{channels} out), got groups={groups}"
            )
        base = int(channels // reduction) if divisor == 1 else make_divisible(channels / reduction, divisor)
        hidden = max(base, min_hidden)

        conv, norm = conv_nd(spatial_dims), batch_norm_nd(spatial_dims)
        branches = []
        for kernel in kernels:
            if dilate:
                dilation = tuple(max(1, (k - 1) // 2) for k in kernel)
                kernel = tuple(1 if k == 1 else 3 for k in kernel)
            else:
                dilation = (1,) * spatial_dims
            padding = tuple(d * (k // 2) for k, d in zip(kernel, dilation))
            branches.append(nn.Sequential(OrderedDict([
                ("conv", conv(branch_in, channels, kernel, padding=padding, dilation=dilation,
                              groups=groups, bias=False)),
                ("bn", norm(channels)),
                ("act", resolve_activation(activation, name="activation")),
            ])))
        self.branches = nn.ModuleList(branches)
        self.reduce = nn.Linear(channels, hidden, bias=False)
        self.reduce_norm = nn.BatchNorm1d(hidden)
        self.act = resolve_activation(activation, name="activation")
        self.select = nn.Linear(hidden, self.num_branches * channels, bias=False)

    def _check(self, x: torch.Tensor) -> None:
        check_input(x, module="SelectiveKernel", channels=self.channels, ndim=self.spatial_dims + 2,
                    dtype=self.reduce.weight.dtype)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The branch outputs U_1 ... U_M, each (N, C, *spatial)."""
        if self.split_input:
            parts = torch.chunk(x, self.num_branches, dim=1)
            return [branch(part) for branch, part in zip(self.branches, parts)]
        return [branch(x) for branch in self.branches]

    def _select(self, branches: list[torch.Tensor]) -> torch.Tensor:
        s = global_avg_pool(sum(branches[1:], branches[0]))  # (N, C)
        z = self.act(self.reduce_norm(self.reduce(s)))
        logits = self.select(z).reshape(s.shape[0], self.num_branches, self.channels)
        a = torch.softmax(logits, dim=1)
        return a.reshape(*a.shape, *([1] * self.spatial_dims))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The branch weights a, shape (N, M, C, 1, ..., 1), summing to 1 over M."""
        self._check(x)
        return self._select(self.split(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """V = sum_m a_m ⊙ U_m, same shape and dtype as ``x``."""
        self._check(x)
        branches = self.split(x)
        a = self._select(branches)
        out = a[:, 0] * branches[0]
        for m in range(1, self.num_branches):
            out = out + a[:, m] * branches[m]
        return out


def selective_kernel_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``SelectiveKernel`` state dict with :class:`SelectiveKernel`'s keys.

    ``paths.{m}.conv`` / ``paths.{m}.bn`` -> ``branches.{m}.conv`` / ``branches.{m}.bn``;
    ``attn.fc_reduce`` -> ``reduce`` and ``attn.fc_select`` -> ``select`` (1x1
    convolution weights flattened to linear ones); ``attn.bn`` -> ``reduce_norm``.

    Raises:
        ValueError: a key that is not part of timm's module (the message names it).
    """
    return rename_prefixes(
        state_dict,
        {"paths.": ("branches.", None), "attn.fc_reduce.": ("reduce.", 1),
         "attn.bn.": ("reduce_norm.", None), "attn.fc_select.": ("select.", 1)},
        module="SelectiveKernel",
    )
