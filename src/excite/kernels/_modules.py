"""Read the fused functions' arguments off the attention modules' submodules."""

from __future__ import annotations

import torch
from torch import nn

_NAMES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.SiLU: "silu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.Hardsigmoid: "hard_sigmoid",
    nn.Identity: "identity",
}


def activation_name(module: nn.Module) -> str | None:
    """The fused path's name for an activation module, or None if it has no fused form.

    Exact types only (a subclass may change forward); ``nn.GELU`` only with the exact
    (erf) form.
    """
    if type(module) is nn.GELU:
        return "gelu" if module.approximate == "none" else None
    return _NAMES.get(type(module))


def norm_affine(norm: nn.Module) -> tuple[bool, torch.Tensor | None, torch.Tensor | None]:
    """(supported, scale, shift) for the spatial module's optional norm.

    ``nn.Identity`` -> no affine. A BatchNorm using running statistics (eval mode, or
    ``track_running_stats`` with the stats present and not training) is the affine
    ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``, built with
    autograd ops so gamma and beta still receive gradients. A training-mode BatchNorm
    (batch statistics) has no fused form.
    """
    if type(norm) is nn.Identity:
        return True, None, None
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        if norm.training or norm.running_mean is None or norm.running_var is None:
            return False, None, None
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = norm.weight * scale
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = norm.bias + shift
        return True, scale, shift
    return False, None, None
