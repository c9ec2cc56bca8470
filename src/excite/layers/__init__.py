"""Rank-generic attention modules for (N, C, L), (N, C, H, W) and (N, C, T, H, W) tensors.

Every module keeps the input's shape: ``forward(x) = x ⊙ gate(x)``; ``gate(x)`` returns
the attention map alone. Build them by name with :func:`create_attention`, or resolve "which attention, with
which options" once into an :class:`AttentionFactory` with :func:`attention_factory`.
"""

from __future__ import annotations

from .cbam import CBAM, ChannelAttention, SpatialAttention
from .eca import ECA, eca_kernel_size
from .factory import (
    NO_ATTENTION,
    AttentionFactory,
    AttentionLike,
    attention_factory,
    reset_attention,
    resolve_attention,
)
from .registry import create_attention, list_attention, register_attention
from .scse import SCSE, SpatialSqueezeExcite
from .squeeze_excite import SqueezeExcite

__all__ = [
    "NO_ATTENTION",
    "AttentionFactory",
    "AttentionLike",
    "CBAM",
    "ECA",
    "SCSE",
    "ChannelAttention",
    "SpatialAttention",
    "SpatialSqueezeExcite",
    "SqueezeExcite",
    "attention_factory",
    "create_attention",
    "eca_kernel_size",
    "list_attention",
    "register_attention",
    "reset_attention",
    "resolve_attention",
]
