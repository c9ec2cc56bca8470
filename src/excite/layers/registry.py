"""Attention modules by name: ``create_attention("cbam", 64, spatial_dims=3)``.

Names resolve through :func:`excite.layers.attention_factory` (one object for "which
attention, with which options"); ``create_attention`` is that factory called once.
``spatial_dims`` is passed only to builders whose signature has a ``spatial_dims``
parameter (the ones with spatial convolutions: "sam", "cbam", "scse"); channel-only
modules work on any rank and never see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from .factory import (
    BUILDERS,
    NONE_NAME,
    AttentionLike,
    attention_factory,
    register_builder,
    registered_names,
)
from .rank import check_spatial_dims

__all__ = ["create_attention", "list_attention", "register_attention"]

F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY = BUILDERS  # the one table of builders (kept under this name for tests' scratch copies)


def register_attention(name: str) -> Callable[[F], F]:
    """Class/function decorator that makes ``create_attention(name, ...)`` build it.

    The builder is called as ``builder(channels, **options)``, plus ``spatial_dims=``
    when its signature has that parameter. It may declare ``attention_placement``
    ("block" or "stage") and ``reset_parameters()`` (see :mod:`excite.layers.factory`).

    Args:
        name: lower-case registry name, e.g. ``"se"``.

    Raises:
        TypeError: ``name`` is not a string, or the decorated object is not callable.
        ValueError: ``name`` is empty, not lower-case, "none", or already registered.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    if not name or name != name.lower() or name != name.strip() or name == NONE_NAME:
        raise ValueError(f"name must be a non-empty lower-case string other than 'none', got {name!r}")
    if name in registered_names():
        raise ValueError(f"name {name!r} is already registered")

    def decorator(builder: F) -> F:
        if not callable(builder):
            raise TypeError(f"register_attention({name!r}) needs a class or function, got {builder!r}")
        register_builder(name, builder)
        return builder

    return decorator


def list_attention() -> list[str]:
    """The registered names, sorted: ``["cam", "cbam", "eca", "sam", "scse", "se", ...]``."""
    return registered_names()


def create_attention(
    name: AttentionLike,
    channels: int,
    *,
    spatial_dims: int = 2,
    **kwargs: Any,
) -> nn.Module:
    """Build an attention module for ``channels`` input channels.

    ``create_attention(name, c, spatial_dims=d, **kw)`` is
    ``attention_factory(name, **kw)(c, spatial_dims=d)``.

    Args:
        name: a registered name (any case; see :func:`list_attention`), ``None`` or
            ``"none"`` (gives ``nn.Identity()``), an ``nn.Module`` class taking
            ``channels`` first, or an :class:`~excite.layers.AttentionFactory`.
        channels: C, the input channels.
        spatial_dims: 1, 2 or 3; passed on only to modules that have spatial weights.
        **kwargs: the module's keyword arguments (``reduction=``, ``kernel_size=``, ...).

    Returns:
        The module; ``module(x)`` keeps the shape of ``x``.

    Raises:
        ValueError: an unknown name (the message lists the registered ones) or a bad
            ``spatial_dims``; the module's own argument checks.
        TypeError: ``name`` is neither a string, ``None``, an ``nn.Module`` class nor a
            factory; an option the module does not take.
    """
    check_spatial_dims(spatial_dims)
    return attention_factory(name, **kwargs)(channels, spatial_dims=spatial_dims)
