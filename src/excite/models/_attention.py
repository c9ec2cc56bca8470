"""How backbones build their attention modules (one place for every model).

Backbones never import a concrete attention class: they ask :func:`make_attention` for
"the module named ``attention`` over ``channels`` channels", which goes through
``excite.layers.create_attention`` so any registered attention type works in any block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

ATTENTION_POSITIONS = ("standard", "pre", "post", "identity")


def is_none(attention: str | None) -> bool:
    """True for "no attention": ``None`` or the string ``"none"`` (any case)."""
    return attention is None or (isinstance(attention, str) and attention.lower() == "none")


def check_attention_args(
    attention: object, attention_kwargs: object
) -> tuple[str | None, dict[str, Any]]:
    """Validate the ``attention`` / ``attention_kwargs`` pair a backbone received.

    Returns:
        ``(attention, kwargs)`` with ``kwargs`` a fresh dict (empty when None was given).

    Raises:
        TypeError: ``attention`` is not a string or None, or ``attention_kwargs`` is not
            a mapping with string keys.
    """
    if attention is not None and not isinstance(attention, str):
        raise TypeError(
            f"attention must be a name from excite.list_attention() or None, got {attention!r}"
        )
    if attention_kwargs is None:
        return attention, {}
    if not isinstance(attention_kwargs, Mapping) or not all(
        isinstance(k, str) for k in attention_kwargs
    ):
        raise TypeError(
            f"attention_kwargs must be a dict of keyword arguments for the attention "
            f"module or None, got {attention_kwargs!r}"
        )
    if is_none(attention) and attention_kwargs:
        raise ValueError(
            f"attention_kwargs={dict(attention_kwargs)!r} were given but attention is "
            f"{attention!r}; pass an attention name (e.g. attention='cbam') or drop them"
        )
    return attention, dict(attention_kwargs)


def make_attention(
    attention: str | None, channels: int, *, spatial_dims: int, kwargs: Mapping[str, Any]
) -> nn.Module:
    """Build ``attention`` over ``channels`` channels, or ``nn.Identity`` for none.

    Args:
        attention: a name accepted by ``excite.create_attention`` or None / "none".
        channels: channels C of the tensor the module will gate.
        spatial_dims: rank d of the (N, C, *spatial) tensor (1, 2 or 3).
        kwargs: extra keyword arguments for the attention constructor.
    """
    if is_none(attention):
        return nn.Identity()
    from excite.layers import create_attention  # models depend on layers, lazily

    return create_attention(attention, channels, spatial_dims=spatial_dims, **kwargs)


def zero_init_spatial_norm(module: nn.Module) -> int:
    """Zero the BatchNorm weights inside every spatial-attention gate of ``module``.

    The official CBAM code initialises the BatchNorm after the 7x7 spatial convolution
    with gamma = 0 (so every spatial gate starts at sigmoid(0) = 0.5). Returns how many
    BatchNorm layers were set.
    """
    try:
        from excite.layers import SpatialAttention
    except ImportError:  # pragma: no cover - layers always present in a full install
        return 0
    count = 0
    for sub in module.modules():
        if isinstance(sub, SpatialAttention):
            for norm in sub.modules():
                if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.affine:
                    nn.init.zeros_(norm.weight)
                    count += 1
    return count
