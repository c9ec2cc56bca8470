"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from excite.checks import check_number

from ._common import (
    check_bool,
    check_channels,
    check_choice,
    check_input,
    check_positive_int,
    check_reduction,
    hidden_width,
)
from .rank import accumulate_dtype, batch_norm_nd, check_spatial_dims, conv_nd, max_pool_nd, ntuple
from .registry import register_attention
from .timm_keys import rename_prefixes

MODES = ("embedded_gaussian", "dot_product")
SCALES = ("channels", "inner")


@register_attention("nonlocal")
class NonLocal(nn.Module):
    """Non-local block: every position attends to every (sub-sampled) position.

    Wang et al. 2018, eq. 1-2 and 6, over the P positions i, j of the (N, C, *spatial)
    input (all of T x H x W at rank 3)::

        y_i = 1 / C(x) sum_j f(x_i, x_j) g(x_j)            g(x) = W_g x   (1x1 conv C→C')
        f(x_i, x_j) = exp(s theta(x_i)^T phi(x_j)),  C(x) = sum_j f     ("embedded_gaussian")
        f(x_i, x_j) = s theta(x_i)^T phi(x_j),       C(x) = P'          ("dot_product")
        z_i = BN(W_z y_i) + x_i                                   W_z: 1x1 conv C'→C

        x ─┬─ theta ───────────────┐
           ├─ phi ─ [max pool] ─ f(·,·) / C(x) ─┐
           ├─ g ─── [max pool] ─────────────── Σ_j ─ W_z ─ BN ─┐
           └──────────────────────────────────────────────────(+)── z

    theta, phi and g are 1 x ... x 1 convolutions to C' = C / r channels (r = 2 in the
    paper). ``subsample`` adds the paper's max pooling after phi and g (its video ResNets
    pool (1, 2, 2)), so the keys number P' = P / prod(subsample). The scale s is 1 in the
    paper; timm's ``NonLocalAttn`` uses C^(-1/2) (``scale="channels"``). The paper
    initialises the BatchNorm after W_z to zero, so a new block is the identity
    (:meth:`reset_parameters`, called here and by excite's models).

    The embedded Gaussian runs as one ``scaled_dot_product_attention`` (fused kernels,
    no P x P' matrix kept for backward on the fused paths); the dot-product form is
    computed as ``theta (phi^T g) / P'``, linear in P. ``gate(x)`` returns the P x P'
    pairwise weights f / C(x) explicitly.

    In excite's ResNets the block sits after a residual block with
    ``attention_position="post"``; the paper's "10 blocks in res3 and res4" of its
    ResNet-50 is ``attention_stages=(2, 3)`` (excite numbers stages from layer1 = res2).

    Args:
        channels: C, the input channels.
        spatial_dims: d, 1, 2 or 3.
        mode: f, "embedded_gaussian" or "dot_product".
        reduction: r; C' = ``channels // reduction`` (2 in the paper).
        divisor: round C / r to a multiple of this (timm's ``make_divisible``); 1 = floor.
        subsample: max-pooling kernel (= stride) after phi and g: an int or a d-tuple;
            None or 1 for none.
        bias: biases in the four convolutions.
        scale: s, a number > 0, "channels" (C^(-1/2)) or "inner" (C'^(-1/2)).

    Attributes:
        theta, phi, g, w_z: the 1x1 convolutions; norm: the BatchNorm after W_z.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/spatial_dims/reduction/divisor/subsample/scale, an
            inner width of 0, or an unknown mode.
    """

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int = 2,
        mode: str = "embedded_gaussian",
        reduction: float = 2,
        divisor: int = 1,
        subsample: int | tuple[int, ...] | None = None,
        bias: bool = True,
        scale: float | str = 1.0,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.mode = check_choice(mode, MODES, name="mode")
        check_reduction(reduction)
        check_positive_int(divisor, name="divisor")
        inner = hidden_width(channels, reduction, module="NonLocal", divisor=divisor)
        self.inner_channels = inner
        check_bool(bias, name="bias")
        if isinstance(scale, str):
            check_choice(scale, SCALES, name="scale")
            self.scale = 1.0 / math.sqrt(channels if scale == "channels" else inner)
        else:
            self.scale = float(check_number(scale, name="scale", minimum=0, strict_minimum=True))
        if subsample is None:
            kernel = (1,) * spatial_dims
        else:
            kernel = ntuple(subsample, spatial_dims, name="subsample")
            for k in kernel:
                check_positive_int(k, name="subsample")
        self.subsample = kernel

        conv = conv_nd(spatial_dims)
        self.theta = conv(channels, inner, kernel_size=1, bias=bias)
        self.phi = conv(channels, inner, kernel_size=1, bias=bias)
        self.g = conv(channels, inner, kernel_size=1, bias=bias)
        # ceil_mode: a window that would start inside the map is kept even when it is cut
        # by the border (so a map smaller than the kernel still has one key)
        self.pool = (
            nn.Identity()
            if all(k == 1 for k in kernel)
            else max_pool_nd(spatial_dims)(kernel_size=kernel, stride=kernel, ceil_mode=True)
        )
        self.w_z = conv(inner, channels, kernel_size=1, bias=bias)
        self.norm = batch_norm_nd(spatial_dims)(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: the BatchNorm after W_z starts at gamma = beta = 0,
        so the block starts as the identity (the convolutions keep their init)."""
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """theta (N, P, C'), phi (N, P', C') and g (N, P', C')."""
        check_input(x, module="NonLocal", channels=self.channels, ndim=self.spatial_dims + 2,
                    dtype=self.theta.weight.dtype)
        theta = self.theta(x).flatten(2).transpose(1, 2)
        phi = self.pool(self.phi(x)).flatten(2).transpose(1, 2)
        g = self.pool(self.g(x)).flatten(2).transpose(1, 2)
        return theta, phi, g

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The pairwise weights f(x_i, x_j) / C(x), shape (N, P, P') with P the positions
        of x (flattened in C order) and P' those after sub-sampling; rows sum to 1 for the
        embedded Gaussian."""
        theta, phi, _ = self._embed(x)
        acc = accumulate_dtype(x.dtype)
        logits = (theta.to(acc) @ phi.to(acc).transpose(1, 2)) * self.scale
        if self.mode == "embedded_gaussian":
            weights = torch.softmax(logits, dim=-1)
        else:
            weights = logits / phi.shape[1]
        return weights.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """z = BN(W_z y) + x, same shape and dtype as ``x``."""
        theta, phi, g = self._embed(x)
        if self.mode == "embedded_gaussian":
            y = F.scaled_dot_product_attention(theta, phi, g, scale=self.scale)
        else:  # theta (phi^T g) / P': the same sum in O(P C'^2) instead of O(P P' C')
            acc = accumulate_dtype(x.dtype)
            context = phi.to(acc).transpose(1, 2) @ g.to(acc)  # (N, C', C')
            y = (theta.to(acc) @ context * (self.scale / phi.shape[1])).to(x.dtype)
        y = y.transpose(1, 2).reshape(x.shape[0], self.inner_channels, *x.shape[2:])
        return self.norm(self.w_z(y)) + x


def non_local_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``NonLocalAttn`` state dict with :class:`NonLocal`'s keys:
    ``t`` -> ``theta``, ``p`` -> ``phi``, ``g`` -> ``g``, ``z`` -> ``w_z``, ``norm`` ->
    ``norm`` (same shapes).

    Raises:
        ValueError: a key that is not part of timm's module (the message names it).
    """
    renames = {"t.": "theta.", "p.": "phi.", "g.": "g.", "z.": "w_z.", "norm.": "norm."}
    return rename_prefixes(
        state_dict, {k: (v, None) for k, v in renames.items()}, module="NonLocalAttn"
    )
