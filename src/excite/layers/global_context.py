"""Global context block (Cao, Xu, Lin, Wei & Hu, "GCNet: Non-local Networks Meet
Squeeze-Excitation Networks and Beyond", ICCV Workshops 2019 / TPAMI 2020)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from excite.checks import check_number

from ._common import (
    check_channels,
    check_choice,
    check_input,
    check_positive_int,
    check_reduction,
    hidden_width,
    resolve_activation,
)
from .rank import global_avg_pool
from .registry import register_attention
from .timm_keys import rename_prefixes

FUSIONS = ("add", "scale", "scale+add")
POOLINGS = ("attention", "avg")

_HALF = (torch.float16, torch.bfloat16)


class ContextTransform(nn.Module):
    """GCNet's bottleneck transform ``W_v2 ReLU(LN(W_v1 z))`` of the context vector z:
    C→C/r, LayerNorm over the C/r features, activation, C/r→C (both with biases).

    Args:
        channels: C.
        hidden: C/r.
        eps: the LayerNorm epsilon.
        activation: the activation (name or ``nn.Module`` class).
    """

    def __init__(
        self, channels: int, hidden: int, *, eps: float, activation: str | type[nn.Module]
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.act = resolve_activation(activation, name="activation")
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, C)."""
        return self.fc2(self.act(self.norm(self.fc1(z))))


@register_attention("gc")
class GlobalContext(nn.Module):
    """Global context (GC) block: attention pooling of one context vector, a bottleneck
    transform, and fusion into every position.

    Cao et al. (the GC block): ``z_i = x_i + W_v2 ReLU(LN(W_v1 Σ_j α_j x_j))`` with the
    attention weights ``α_j = exp(W_k x_j) / Σ_m exp(W_k x_m)`` (softmax over all
    positions j of the (T, )H, W or L grid), W_k in R^{1 x C}, W_v1 in R^{C/r x C},
    W_v2 in R^{C x C/r}::

        x ──┬───────────────────────────────────────────────── ⊙ ─── + ── y
            │                                                  │     │
            └─ softmax(W_k x) ─ Σ_j α_j x_j ─┬─ transform ─ gate ┘     │   ("scale")
                                             └─ transform ────────────┘   ("add")

    ``fusion="add"`` is the paper's default (broadcast addition); ``"scale"`` multiplies
    by ``sigma(transform(context))`` (an SE-like recalibration, timm's default);
    ``"scale+add"`` does both, scaling first, each with its own transform.
    ``pooling="avg"`` replaces the attention pooling by the spatial mean (the paper's
    ablation; with "scale" this is SE with a LayerNorm). Softmax and pooling run in
    float32 for fp16/bf16 inputs.

    Parameters: ``C + 1`` for W_k (with its bias) plus, per transform,
    ``2·C·C/r + C/r + C + 2·C/r`` (two linear layers with biases, LayerNorm affine).

    Args:
        channels: C, the input channels.
        reduction: r; the bottleneck width is ``channels // reduction`` (the paper: 16).
        hidden_channels: the bottleneck width C/r directly (overrides ``reduction``).
        fusion: "add", "scale" or "scale+add".
        pooling: "attention" (the paper's context modelling) or "avg".
        norm_eps: the LayerNorm epsilon (PyTorch's 1e-5; timm uses 1e-6).
        activation: the transform's activation, a name or an ``nn.Module`` class.
        gate: sigma of the "scale" fusion, a name or an ``nn.Module`` class.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad channels/reduction/hidden_channels/norm_eps, a width of 0, or
            an unknown fusion/pooling/activation/gate.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: float = 16,
        hidden_channels: int | None = None,
        fusion: str = "add",
        pooling: str = "attention",
        norm_eps: float = 1e-5,
        activation: str | type[nn.Module] = "relu",
        gate: str | type[nn.Module] = "sigmoid",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        check_reduction(reduction)
        if hidden_channels is None:
            hidden = hidden_width(channels, reduction, module="GlobalContext")
        else:
            hidden = check_positive_int(hidden_channels, name="hidden_channels")
        self.fusion = check_choice(fusion, FUSIONS, name="fusion")
        self.pooling = check_choice(pooling, POOLINGS, name="pooling")
        check_number(norm_eps, name="norm_eps", minimum=0, strict_minimum=True)
        self.attn = nn.Linear(channels, 1) if pooling == "attention" else None
        transform = dict(eps=norm_eps, activation=activation)
        self.scale_transform = (
            ContextTransform(channels, hidden, **transform) if "scale" in fusion else None
        )
        self.gate_act = resolve_activation(gate, name="gate")
        self.add_transform = (
            ContextTransform(channels, hidden, **transform) if "add" in fusion else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' released initialisation: W_k Kaiming-normal (fan-in, ReLU gain)
        with a zero bias, and the last layer of every transform zero (weight and bias),
        so a block starts as the identity ("add") or as a constant ``sigma(0)`` scale.

        Called at construction and by excite's models after their weight init.
        """
        if self.attn is not None:
            nn.init.kaiming_normal_(self.attn.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.attn.bias)
        for transform in (self.scale_transform, self.add_transform):
            if transform is not None:
                nn.init.zeros_(transform.fc2.weight)
                nn.init.zeros_(transform.fc2.bias)

    def _check(self, x: torch.Tensor) -> None:
        transform = self.scale_transform if self.scale_transform is not None else self.add_transform
        weight = self.attn.weight if self.attn is not None else transform.fc1.weight
        check_input(x, module="GlobalContext", channels=self.channels, dtype=weight.dtype)

    @staticmethod
    def _flat(x: torch.Tensor) -> torch.Tensor:
        """(N, C, M) over the M = prod(spatial) positions, float32 for half inputs."""
        flat = x.flatten(2)
        return flat.float() if x.dtype in _HALF else flat

    def _weights(self, flat: torch.Tensor) -> torch.Tensor:
        """alpha, (N, M, 1), from the flattened input."""
        if self.attn is None:
            m = flat.shape[2]
            return flat.new_full((flat.shape[0], m, 1), 1.0 / m)
        weight, bias = self.attn.weight.to(flat.dtype), self.attn.bias.to(flat.dtype)
        logits = nn.functional.linear(flat.transpose(1, 2), weight, bias)  # W_k x_j
        return torch.softmax(logits, dim=1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled context ``Σ_j α_j x_j``, shape (N, C), dtype of ``x``."""
        self._check(x)
        if self.attn is None:
            return global_avg_pool(x)
        flat = self._flat(x)
        return torch.bmm(flat, self._weights(flat)).squeeze(2).to(x.dtype)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention-pooling map alpha, shape (N, 1, *spatial), summing to 1 over the
        positions (uniform for ``pooling="avg"``)."""
        self._check(x)
        alpha = self._weights(self._flat(x)).to(x.dtype)
        return alpha.reshape(x.shape[0], 1, *x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fused features, same shape and dtype as ``x``."""
        z = self.context(x)
        expand = (x.shape[0], self.channels, *([1] * (x.ndim - 2)))
        out = x
        if self.scale_transform is not None:
            out = out * self.gate_act(self.scale_transform(z)).reshape(expand)
        if self.add_transform is not None:
            out = out + self.add_transform(z).reshape(expand)
        return out


def global_context_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``GlobalContext`` state dict with :class:`GlobalContext`'s keys:
    ``conv_attn`` -> ``attn``, ``mlp_scale`` -> ``scale_transform``, ``mlp_add`` ->
    ``add_transform`` (1×1 convolution weights flattened to Linear weights). Load it into
    ``GlobalContext(C, hidden_channels=max(1, int(C / 8 + 0.5)), fusion="scale",
    norm_eps=1e-6)``
    (timm's "gc"; ``fusion="add"`` for "gca", ``"scale+add"`` with both MLPs).

    Raises:
        ValueError: a key that is not part of timm's module.
    """
    renames = {
        "conv_attn.": ("attn.", 1),
        "mlp_scale.": ("scale_transform.", 1),
        "mlp_add.": ("add_transform.", 1),
    }
    return rename_prefixes(state_dict, renames, module="GlobalContext")
