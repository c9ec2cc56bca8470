"""One object for "which attention, with which options": :class:`AttentionFactory`.

``attention_factory("cbam", reduction=8)`` resolves a name (or an ``nn.Module`` class)
and its options once, checks the options against the module's signature, and returns
a callable ``factory(channels, *, spatial_dims) -> nn.Module`` that also carries its
name and options (for configs, reprs and run directories)::

    "cbam", {reduction: 8}  ──attention_factory──▶  AttentionFactory  ──(C, d)──▶  CBAM(C, ...)
    None | "none"           ──attention_factory──▶  NO_ATTENTION      ──(C, d)──▶  nn.Identity()

Models take ``attention=`` as a name, a factory or None and turn it into a factory once,
at their own boundary, with :func:`resolve_attention`; blocks only call it. ``None`` and
``"none"`` are the same factory everywhere: no attention.

A family declares what it needs from the model on its class:

- ``attention_placement = "block"`` (the default: in every residual block, before the
  addition) or ``"stage"`` (once at the end of each stage, as BAM does);
- ``reset_parameters()``: the family's own initialisation, which a model calls after its
  generic weight initialisation (e.g. the official CBAM's zero-initialised BatchNorm).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Union

from torch import nn

from .rank import check_spatial_dims

__all__ = [
    "NO_ATTENTION",
    "PLACEMENTS",
    "AttentionFactory",
    "AttentionLike",
    "attention_factory",
    "register_builder",
    "registered_names",
    "reset_attention",
    "resolve_attention",
]

#: where a family sits in a residual network (declared as ``attention_placement``)
PLACEMENTS = ("block", "stage")

NONE_NAME = "none"

#: name -> builder (a class or function taking ``channels`` first); filled by
#: ``excite.layers.registry.register_attention``, which names it ``_REGISTRY``
BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_BUILDERS = BUILDERS


def register_builder(name: str, builder: Callable[..., nn.Module]) -> None:
    """Record ``builder`` under ``name`` (used by ``register_attention``)."""
    _BUILDERS[name] = builder


def registered_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_BUILDERS)


def _parameters(builder: Callable[..., nn.Module]) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(builder).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None


class AttentionFactory:
    """``factory(channels, *, spatial_dims) -> nn.Module`` with a name and options.

    Build one with :func:`attention_factory`. Two factories are equal when they build the
    same thing (same builder and options). ``repr`` reads as the call that makes it.

    Attributes:
        name: the registry name ("cbam"), "none", or ``module.QualName`` for a class.
        options: the keyword arguments every module gets (a read-only copy).
        builder: the class or function called, or None for no attention.
        registered: True when ``name`` is a registry name (so a config can store it).
    """

    __slots__ = ("_builder", "_name", "_options", "_registered", "_takes_spatial_dims")

    def __init__(
        self,
        name: str,
        builder: Callable[..., nn.Module] | None,
        options: Mapping[str, Any],
        *,
        registered: bool,
    ) -> None:
        self._name = name
        self._builder = builder
        self._options = dict(options)
        self._registered = registered
        params = None if builder is None else _parameters(builder)
        self._takes_spatial_dims = params is not None and "spatial_dims" in params

    @property
    def name(self) -> str:
        return self._name

    @property
    def options(self) -> dict[str, Any]:
        return dict(self._options)

    @property
    def builder(self) -> Callable[..., nn.Module] | None:
        return self._builder

    @property
    def registered(self) -> bool:
        return self._registered

    @property
    def is_none(self) -> bool:
        """True for the factory of "no attention" (it builds ``nn.Identity``)."""
        return self._builder is None

    @property
    def placement(self) -> str:
        """Where the family sits: "block" (every residual block) or "stage" (the end of
        each stage), from the builder's ``attention_placement`` attribute."""
        placement = getattr(self._builder, "attention_placement", "block")
        if placement not in PLACEMENTS:
            raise ValueError(
                f"{self._name}: attention_placement must be one of {PLACEMENTS}, got {placement!r}"
            )
        return placement

    def __call__(self, channels: int, *, spatial_dims: int) -> nn.Module:
        """A new module over ``channels`` channels of a rank-``spatial_dims`` tensor.

        ``spatial_dims`` reaches only builders whose signature has that parameter (the
        ones with spatial weights); channel-only modules work on any rank.
        """
        check_spatial_dims(spatial_dims)
        if self._builder is None:
            return nn.Identity()
        kwargs = dict(self._options)
        if self._takes_spatial_dims:
            kwargs["spatial_dims"] = spatial_dims
        return self._builder(channels, **kwargs)

    def with_options(self, **options: Any) -> AttentionFactory:
        """A factory with ``options`` merged over this one's (they win)."""
        if not options:
            return self
        if self._builder is None:
            raise ValueError(
                f"attention_kwargs {options!r} were given but attention is 'none'; pass an "
                "attention name (e.g. 'cbam') or drop the options"
            )
        _check_options(self._name, self._builder, options)
        return AttentionFactory(
            self._name, self._builder, {**self._options, **options}, registered=self._registered
        )

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}`` for a config file (registered names only)."""
        if not self._registered and self._builder is not None:
            raise ValueError(
                f"attention {self._name} is an unregistered class and cannot be written to a "
                "config; register it with @excite.register_attention(name)"
            )
        return {"name": self._name, "options": dict(self._options)}

    def _key(self) -> tuple[Any, ...]:
        return (self._builder, repr(sorted(self._options.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttentionFactory):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = [repr(self._name)] + [f"{k}={v!r}" for k, v in self._options.items()]
        return f"attention_factory({', '.join(args)})"


#: the factory of "no attention": ``NO_ATTENTION(c, spatial_dims=d)`` is ``nn.Identity()``
NO_ATTENTION = AttentionFactory(NONE_NAME, None, {}, registered=True)

#: what ``attention=`` accepts everywhere
AttentionLike = Union[str, type[nn.Module], AttentionFactory, None]


def _check_options(name: str, builder: Callable[..., nn.Module], options: Mapping[str, Any]) -> None:
    """Unknown option names raise ``TypeError`` listing the ones the module takes."""
    for key in options:
        if not isinstance(key, str):
            raise TypeError(f"attention options must have string keys, got {key!r}")
    reserved = sorted({"channels", "spatial_dims"} & set(options))
    if reserved:
        raise TypeError(
            f"attention option(s) {reserved} are set by the model for each module; "
            "do not pass them as options"
        )
    params = _parameters(builder)
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [
        n for n, p in params.items()
        if n not in ("channels", "spatial_dims", "self")
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"attention {name!r} got an unexpected keyword argument "
            + ", ".join(repr(u) for u in unknown)
            + f"; its options are: {', '.join(allowed) or '(none)'}"
        )


def attention_factory(
    name_or_module_class: str | type[nn.Module] | AttentionFactory | None, **options: Any
) -> AttentionFactory:
    """Resolve "which attention, with which options" into an :class:`AttentionFactory`.

    Args:
        name_or_module_class: a registered name (any case: "cbam", "CBAM"; see
            ``excite.list_attention()``), ``None`` or ``"none"`` (no attention), an
            ``nn.Module`` class taking ``channels`` first, or a factory (its options are
            merged with ``options``).
        **options: keyword arguments for every module, e.g. ``reduction=8``.

    Returns:
        The factory; ``factory(channels, spatial_dims=d)`` builds a module.

    Raises:
        ValueError: an unknown name (the message lists the registered ones), or options
            given with no attention.
        TypeError: neither a name, None, an ``nn.Module`` class nor a factory; an option
            the module does not take.
    """
    value = name_or_module_class
    if isinstance(value, AttentionFactory):
        return value.with_options(**options)
    if value is None or (isinstance(value, str) and value.strip().lower() == NONE_NAME):
        return NO_ATTENTION.with_options(**options)
    if isinstance(value, str):
        key = value.strip().lower()
        builder = _BUILDERS.get(key)
        if builder is None:
            raise ValueError(
                f"attention name must be one of {registered_names() + [NONE_NAME]} (or None), "
                f"got {value!r}"
            )
        _check_options(key, builder, options)
        return AttentionFactory(key, builder, options, registered=True)
    if isinstance(value, type) and issubclass(value, nn.Module):
        _check_options(value.__name__, value, options)
        registered = next((n for n, b in _BUILDERS.items() if b is value), None)
        name = registered or f"{value.__module__}.{value.__qualname__}"
        return AttentionFactory(name, value, options, registered=registered is not None)
    raise TypeError(
        "attention must be a registered name, None, an nn.Module class or an "
        f"AttentionFactory, got {value!r}"
    )


def resolve_attention(
    attention: str | type[nn.Module] | AttentionFactory | None,
    attention_kwargs: Mapping[str, Any] | None = None,
) -> AttentionFactory:
    """A model's boundary: ``attention=`` and optional ``attention_kwargs`` -> factory.

    Raises:
        TypeError: ``attention_kwargs`` is not a mapping with string keys, or see
            :func:`attention_factory`.
        ValueError: see :func:`attention_factory`.
    """
    if attention_kwargs is None:
        attention_kwargs = {}
    if not isinstance(attention_kwargs, Mapping):
        raise TypeError(
            f"attention_kwargs must be a dict of keyword arguments for the attention module "
            f"or None, got {attention_kwargs!r}"
        )
    return attention_factory(attention, **attention_kwargs)


def reset_attention(module: nn.Module) -> None:
    """Run an attention module's own initialisation (its ``reset_parameters``), if any.

    Models call this for every attention module after their generic weight init, so a
    family's init (e.g. the official CBAM's zero BatchNorm) survives the model's loop.
    """
    reset = getattr(module, "reset_parameters", None)
    if callable(reset) and not isinstance(module, nn.Identity):
        reset()
