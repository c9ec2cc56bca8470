"""Attention modules by name: ``create_attention("cbam", 64, spatial_dims=3)``.

Blocks in :mod:`excite.models` take an ``attention=`` name and build it here, so one
hook serves every attention type. ``spatial_dims`` is passed only to factories whose
signature has a ``spatial_dims`` parameter (the ones with spatial convolutions: "sam",
"cbam", "scse"); channel-only modules work on any rank and never see it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ._rank import check_spatial_dims

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)

_REGISTRY: dict[str, Factory] = {}
_NONE = "none"


def register_attention(name: str) -> Callable[[F], F]:
    """Class/function decorator that makes ``create_attention(name, ...)`` build it.

    The factory is called as ``factory(channels, **kwargs)``, plus
    ``spatial_dims=`` when its signature has that parameter.

    Args:
        name: lower-case registry name, e.g. ``"se"``.

    Raises:
        TypeError: ``name`` is not a string, or the decorated object is not callable.
        ValueError: ``name`` is empty, not lower-case, "none", or already registered.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    if not name or name != name.lower() or name == _NONE:
        raise ValueError(f"name must be a non-empty lower-case string other than 'none', got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"name {name!r} is already registered (to {_REGISTRY[name]!r})")

    def decorator(factory: F) -> F:
        if not callable(factory):
            raise TypeError(f"register_attention({name!r}) needs a class or function, got {factory!r}")
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_attention() -> list[str]:
    """The registered names, sorted: ``["cam", "cbam", "eca", "sam", "scse", "se"]``."""
    return sorted(_REGISTRY)


def _takes_spatial_dims(factory: Factory) -> bool:
    try:
        return "spatial_dims" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def create_attention(
    name: str | type[nn.Module] | None,
    channels: int,
    *,
    spatial_dims: int = 2,
    **kwargs: Any,
) -> nn.Module:
    """Build an attention module for ``channels`` input channels.

    Args:
        name: a registered name (see :func:`list_attention`), ``None`` or ``"none"``
            (gives ``nn.Identity()``), or an ``nn.Module`` class taking ``channels`` first.
        channels: C, the input channels.
        spatial_dims: 1, 2 or 3; passed on only to modules that have spatial weights.
        **kwargs: the module's keyword arguments (``reduction=``, ``kernel_size=``, ...).

    Returns:
        The module; ``module(x)`` keeps the shape of ``x``.

    Raises:
        ValueError: an unknown name (the message lists the registered ones) or a bad
            ``spatial_dims``; the module's own argument checks.
        TypeError: ``name`` is neither a string, ``None`` nor an ``nn.Module`` class.
    """
    check_spatial_dims(spatial_dims)
    if name is None:
        return nn.Identity()
    if isinstance(name, str):
        key = name.lower()
        if key == _NONE:
            return nn.Identity()
        factory = _REGISTRY.get(key)
        if factory is None:
            raise ValueError(
                f"name must be one of {list_attention() + [_NONE]} (or None), got {name!r}"
            )
    elif isinstance(name, type) and issubclass(name, nn.Module):
        factory = name
    else:
        raise TypeError(
            f"name must be a registered name, None or an nn.Module class, got {name!r}"
        )
    if _takes_spatial_dims(factory):
        kwargs["spatial_dims"] = spatial_dims
    return factory(channels, **kwargs)
