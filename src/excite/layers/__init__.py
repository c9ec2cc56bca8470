"""Rank-generic attention modules for (N, C, L), (N, C, H, W) and (N, C, T, H, W) tensors.

Every module keeps the input's shape: ``forward(x) = x ⊙ gate(x)``; ``gate(x)`` returns
the attention map alone. Build them by name with :func:`create_attention`, or resolve "which attention, with
which options" once into an :class:`AttentionFactory` with :func:`attention_factory`.
"""

from __future__ import annotations

from ._common import fused_residual_relu
from .bam import BAM
from .cbam import CBAM, ChannelAttention, SpatialAttention
from .coordinate import CoordinateAttention
from .eca import ECA, eca_kernel_size
from .effective_se import EffectiveSqueezeExcite
from .efficient_local import EfficientLocalAttention
from .factory import (
    NO_ATTENTION,
    AttentionFactory,
    AttentionLike,
    attention_factory,
    reset_attention,
    resolve_attention,
)
from .fca import MultiSpectralAttention
from .gather_excite import GatherExcite
from .gct import GCT
from .global_context import GlobalContext
from .non_local import NonLocal
from .registry import create_attention, list_attention, register_attention
from .scse import SCSE, SpatialSqueezeExcite
from .selective_kernel import SelectiveKernel
from .simam import SimAM
from .srm import SRM
from .squeeze_excite import SqueezeExcite
from .strip_pooling import StripPooling
from .triplet import TripletAttention

__all__ = [
    "fused_residual_relu",
    "NO_ATTENTION",
    "AttentionFactory",
    "AttentionLike",
    "BAM",
    "CBAM",
    "ECA",
    "GCT",
    "SCSE",
    "SRM",
    "ChannelAttention",
    "CoordinateAttention",
    "EffectiveSqueezeExcite",
    "EfficientLocalAttention",
    "GatherExcite",
    "GlobalContext",
    "MultiSpectralAttention",
    "NonLocal",
    "SelectiveKernel",
    "SimAM",
    "SpatialAttention",
    "SpatialSqueezeExcite",
    "SqueezeExcite",
    "StripPooling",
    "TripletAttention",
    "attention_factory",
    "create_attention",
    "eca_kernel_size",
    "list_attention",
    "register_attention",
    "reset_attention",
    "resolve_attention",
]
