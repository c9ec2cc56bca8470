"""The one activation table: each name's ``nn.Module`` class, its function and its derivative.

The attention modules build their activations and gates from it
(``excite.layers``' ``resolve_activation``), the fused paths read a module back to its
name with :func:`activation_name` and differentiate it with :func:`act_backward`. A new
activation is one row here.

``backward(grad, h, z)`` is ``grad * f'(h)`` given the pre-activation ``h`` and the output
``z = f(h)``; ``from_output`` marks the functions whose derivative needs only ``z``
(the fused paths then do not keep ``h`` for backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "Activation", "act_backward", "act_forward", "activation_name"]


@dataclass(frozen=True)
class Activation:
    """One activation: ``module`` builds it, ``forward``/``backward`` are its function and
    ``grad * f'(h)``, as ``torch.nn`` defines them."""

    name: str
    module: type[nn.Module]
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    from_output: bool = False


def _silu_grad(grad: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(h)
    return grad * (sig * (1 + h * (1 - sig)))


def _gelu_grad(grad: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, ``nn.GELU``'s default: Phi(h) + h phi(h)."""
    cdf = 0.5 * (1 + torch.erf(h * (1 / math.sqrt(2))))
    pdf = torch.exp(-0.5 * h * h) * (1 / math.sqrt(2 * math.pi))
    return grad * (cdf + h * pdf)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("relu", nn.ReLU, torch.relu, lambda g, h, z: g * (h > 0).to(g.dtype)),
        Activation("silu", nn.SiLU, F.silu, _silu_grad),
        Activation("gelu", nn.GELU, F.gelu, _gelu_grad),
        Activation("tanh", nn.Tanh, torch.tanh, lambda g, h, z: g * (1 - z * z), True),
        Activation("sigmoid", nn.Sigmoid, torch.sigmoid, lambda g, h, z: g * (z * (1 - z)), True),
        Activation(  # relu6(h + 3) / 6
            "hard_sigmoid", nn.Hardsigmoid, F.hardsigmoid,
            lambda g, h, z: g * ((h > -3) & (h < 3)).to(g.dtype) * (1 / 6),
        ),
        Activation("identity", nn.Identity, lambda h: h, lambda g, h, z: g, True),
    )
}

_BY_CLASS: dict[type[nn.Module], str] = {a.module: a.name for a in ACTIVATIONS.values()}


def act_forward(name: str, h: torch.Tensor) -> torch.Tensor:
    """The named activation of ``h``."""
    return ACTIVATIONS[name].forward(h)


def act_backward(name: str, grad: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``grad * act'(h)``, given the pre-activation ``h`` and the output ``z = act(h)``."""
    return ACTIVATIONS[name].backward(grad, h, z)


def activation_name(module: nn.Module) -> str | None:
    """The table's name for an activation module, or None when it has no row.

    Exact types only (a subclass may change forward); ``nn.GELU`` only in its exact
    (erf) form.
    """
    if type(module) is nn.GELU and module.approximate != "none":
        return None
    return _BY_CLASS.get(type(module))
