"""Model registry: ``create_model(name, ...)`` and ``list_models()``.

Every entry records the ranks it supports, its default rank and a default input size
per rank (used by ``excite profile`` when no ``--input`` is given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from excite.layers.factory import NO_ATTENTION, AttentionFactory, AttentionLike, resolve_attention
from excite.layers.rank import check_spatial_dims
from excite.models.resnet import BasicBlock, Bottleneck, ResNet
from excite.models.video import mc3_18, r2plus1d_18, r3d_18
from excite.models.x3d import X3D_CONFIGS, X3D_SE, x3d

__all__ = ["MODEL_DEFAULT", "ModelInfo", "create_model", "list_models", "model_info", "register_model"]

# default input (without channels) per rank for generic backbones
_GENERIC_INPUT = {1: (4096,), 2: (224, 224), 3: (64, 64, 64)}
_CIFAR_INPUT = {1: (1024,), 2: (32, 32), 3: (32, 32, 32)}
_TINY_INPUT = {1: (256,), 2: (64, 64), 3: (16, 64, 64)}


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model.

    Attributes:
        name: registry name.
        builder: ``builder(*, num_classes, in_channels, spatial_dims, attention,
            **kwargs) -> nn.Module``; ``attention`` is an ``AttentionFactory``.
        spatial_dims: ranks the model supports.
        default_spatial_dims: rank used when ``spatial_dims`` is None.
        input_size: default spatial input size per rank (for profiling).
        family: short family tag ("resnet", "cifar", "video", "x3d", "tiny").
        description: one line for listings.
        torchvision: name of the torchvision model with the same weights, if any.
        defaults: model options used unless the caller sets them.
        default_attention: the attention the model's paper gives it (X3D's SE), used
            when ``create_model`` gets no ``attention=``; no attention for the others.
    """

    name: str
    builder: Callable[..., nn.Module]
    spatial_dims: tuple[int, ...]
    default_spatial_dims: int
    input_size: Mapping[int, tuple[int, ...]]
    family: str
    description: str
    torchvision: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    default_attention: AttentionFactory = NO_ATTENTION

    def default_input_shape(
        self, spatial_dims: int | None = None, in_channels: int = 3
    ) -> tuple[int, ...]:
        """``(1, in_channels, *input_size[spatial_dims])``."""
        rank = self.default_spatial_dims if spatial_dims is None else spatial_dims
        return (1, in_channels, *self.input_size[rank])


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    """Add ``info`` to the registry (names are unique)."""
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is already registered")
    if info.default_spatial_dims not in info.spatial_dims:
        raise ValueError(
            f"default_spatial_dims={info.default_spatial_dims} not in {info.spatial_dims}"
        )
    _REGISTRY[info.name] = info
    return info


def list_models(*, spatial_dims: int | None = None) -> list[str]:
    """Sorted registry names, optionally only those supporting ``spatial_dims``."""
    if spatial_dims is not None:
        check_spatial_dims(spatial_dims)
    return sorted(
        name for name, info in _REGISTRY.items()
        if spatial_dims is None or spatial_dims in info.spatial_dims
    )


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; unknown names raise ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {name!r}")
    info = _REGISTRY.get(name)
    if info is None:
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(list_models())}"
        )
    return info


class _ModelDefault:
    """``create_model``'s ``attention=`` when not given: the model's own default."""

    def __repr__(self) -> str:
        return "<the model's default attention>"


MODEL_DEFAULT: Any = _ModelDefault()


def create_model(
    name: str,
    *,
    attention: AttentionLike = MODEL_DEFAULT,
    attention_kwargs: Mapping[str, Any] | None = None,
    num_classes: int = 1000,
    in_channels: int = 3,
    spatial_dims: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered backbone with an attention module in its residual blocks.

    Args:
        name: a name from :func:`list_models`, e.g. "resnet50", "r3d_18", "tiny_resnet".
        attention: which attention: a name ("se", "cbam", "eca", …), an ``nn.Module``
            class, an :class:`~excite.layers.AttentionFactory`, or None / "none" (no
            attention, for every model). Not given: the model's own default
            (``model_info(name).default_attention``: X3D's SE, no attention elsewhere).
        attention_kwargs: options merged into the attention factory, e.g.
            ``{"variant": "official"}`` for CBAM or ``{"bias": False}`` for SE.
        num_classes: classifier outputs.
        in_channels: input channels (1 for grey images / single-channel clips).
        spatial_dims: 1, 2 or 3; None uses the model's default (2 for image ResNets,
            3 for video models and tiny_resnet). Video models support 3 only.
        **kwargs: model-specific options (``stride_in_1x1``, ``attention_position``,
            ``attention_stages``, ``zero_init_residual``, ``widen``, …; for the ResNets
            also the layouts other codebases' weights need: ``stem_type="deep"`` and
            ``shortcut="avgpool"`` (timm's ResNet-D), ``time_kernel=t`` (I3D, the target
            of :func:`excite.inflate`), ``attention_init="identity"`` (the layout of
            :func:`excite.attach_attention` with ``init="identity"``); see
            :class:`excite.models.ResNet`).

    Returns:
        The model, with attributes ``spatial_dims``, ``in_channels`` and ``num_classes``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), a rank the model
            does not support, or an invalid option value.
        TypeError: an option of the wrong type or one the model does not take.
    """
    info = model_info(name)
    if spatial_dims is None:
        spatial_dims = info.default_spatial_dims
    check_spatial_dims(spatial_dims)
    if spatial_dims not in info.spatial_dims:
        raise ValueError(
            f"model {name!r} supports spatial_dims in {info.spatial_dims}, got "
            f"spatial_dims={spatial_dims}"
        )
    options = {**info.defaults, **kwargs}
    factory = resolve_attention(
        info.default_attention if attention is MODEL_DEFAULT else attention, attention_kwargs
    )
    try:
        model = info.builder(
            num_classes=num_classes,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            attention=factory,
            **options,
        )
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise TypeError(f"create_model({name!r}): {exc}") from exc
        raise
    model.model_name = name  # type: ignore[assignment]
    return model


# --------------------------------------------------------------------------- builders


def _resnet_builder(
    block: type[BasicBlock] | type[Bottleneck],
    layers: tuple[int, ...],
    **fixed: Any,
) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return ResNet(block, layers, **fixed, **kwargs)

    return build


def _wide_resnet18(*, widen: float = 1.5, **kwargs: Any) -> nn.Module:
    """CBAM paper's WideResNet-18: stage widths x ``widen``, stem stays 64."""
    if isinstance(widen, bool) or not isinstance(widen, (int, float)) or widen <= 0:
        raise ValueError(f"widen must be a positive number (1.5 or 2.0 in CBAM), got {widen!r}")
    widths = tuple(int(round(w * widen)) for w in (64, 128, 256, 512))
    return ResNet(BasicBlock, (2, 2, 2, 2), widths=widths, **kwargs)


def _cifar_builder(depth: int) -> Callable[..., nn.Module]:
    n = (depth - 2) // 6

    def build(*, shortcut: str = "pad", **kwargs: Any) -> nn.Module:
        return ResNet(
            BasicBlock, (n, n, n), widths=(16, 32, 64), stem_channels=16,
            stem_kernel_size=3, stem_stride=1, stem_pool=False, shortcut=shortcut, **kwargs,
        )

    return build


def _tiny_resnet(**kwargs: Any) -> nn.Module:
    return ResNet(
        BasicBlock, (1, 1, 1, 1), widths=(16, 32, 64, 128), stem_channels=16,
        stem_kernel_size=3, stem_stride=2, stem_pool=True, **kwargs,
    )


def _video_builder(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def build(*, spatial_dims: int, **kwargs: Any) -> nn.Module:
        del spatial_dims  # checked by create_model: video models are 3D only
        return fn(**kwargs)

    return build


def _x3d_builder(variant: str) -> Callable[..., nn.Module]:
    def build(*, spatial_dims: int, **kwargs: Any) -> nn.Module:
        del spatial_dims
        return x3d(variant, **kwargs)

    return build


_TORCHVISION_2D = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), {}),
    "resnet34": (BasicBlock, (3, 4, 6, 3), {}),
    "resnet50": (Bottleneck, (3, 4, 6, 3), {}),
    "resnet101": (Bottleneck, (3, 4, 23, 3), {}),
    "resnet152": (Bottleneck, (3, 8, 36, 3), {}),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), {"groups": 32, "base_width": 4}),
    "resnext101_32x4d": (Bottleneck, (3, 4, 23, 3), {"groups": 32, "base_width": 4}),
}

for _name, (_block, _layers, _fixed) in _TORCHVISION_2D.items():
    _depth = sum(_layers) * (3 if _block is Bottleneck else 2) + 2
    _what = f"ResNeXt-{_depth} 32x4d" if "groups" in _fixed else f"ResNet-{_depth}"
    register_model(ModelInfo(
        name=_name, builder=_resnet_builder(_block, _layers, **_fixed),
        spatial_dims=(1, 2, 3), default_spatial_dims=2, input_size=_GENERIC_INPUT,
        family="resnet",
        description=f"{_what} (ImageNet layout; 1D/3D with cubic kernels)",
        torchvision=_name if _name != "resnext101_32x4d" else None,
    ))

register_model(ModelInfo(
    name="wide_resnet18", builder=_wide_resnet18, spatial_dims=(1, 2, 3),
    default_spatial_dims=2, input_size=_GENERIC_INPUT, family="resnet",
    description="CBAM paper's WideResNet-18: stage widths x widen (1.5 default, or 2.0)",
))

for _depth in (20, 32, 44, 56, 110):
    register_model(ModelInfo(
        name=f"resnet{_depth}", builder=_cifar_builder(_depth), spatial_dims=(1, 2, 3),
        default_spatial_dims=2, input_size=_CIFAR_INPUT, family="cifar",
        description=f"CIFAR ResNet-{_depth} (He et al. 2016: 3 stages 16/32/64, 3x3 stem)",
    ))

register_model(ModelInfo(
    name="tiny_resnet", builder=_tiny_resnet, spatial_dims=(1, 2, 3), default_spatial_dims=3,
    input_size=_TINY_INPUT, family="tiny",
    description="small fast ResNet: 3^d stride-2 stem + max-pool, 4 stages x 1 block, 16/32/64/128",
))

for _name, _fn, _what in (
    ("r3d_18", r3d_18, "R3D-18 (Tran et al. 2018)"),
    ("mc3_18", mc3_18, "MC3-18, mixed 3D/2D convolutions"),
    ("r2plus1d_18", r2plus1d_18, "R(2+1)D-18, factorised convolutions"),
):
    register_model(ModelInfo(
        name=_name, builder=_video_builder(_fn), spatial_dims=(3,), default_spatial_dims=3,
        input_size={3: (16, 112, 112)}, family="video", description=_what,
        torchvision=_name,
    ))

for _variant, _cfg in X3D_CONFIGS.items():
    register_model(ModelInfo(
        name=f"x3d_{_variant}", builder=_x3d_builder(_variant), spatial_dims=(3,),
        default_spatial_dims=3, input_size={3: _cfg["input_size"]}, family="x3d",
        description=f"X3D-{_variant.upper()} (Feichtenhofer 2020), SE in every other block",
        default_attention=X3D_SE,
    ))
