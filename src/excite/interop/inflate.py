"""2D to 3D: :func:`inflate` a 2D ResNet into its I3D twin, weights included.

Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics
Dataset", CVPR 2017, Sec. 2.4: a 2D network's k x k filters become t x k x k, "repeating
the weights of the 2D filters N times along the time dimension, and rescaling them by
dividing by N" (``method="mean"``); ``method="center"`` puts the 2D filter on the centre
frame and zeros elsewhere. With no temporal striding anywhere (the ``time_kernel`` layout
of :class:`~excite.models.ResNet`), a clip of T identical frames then gives every frame
the 2D network's features (exactly for "center"; for "mean" wherever temporal zero
padding does not reach), and the same logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from excite.checks import check_choice
from excite.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["METHODS", "inflate", "inflate_state_dict", "inflate_weight", "resnet_from_torchvision"]

#: how a k x k kernel fills its t frames
METHODS = ("mean", "center")


def inflate_weight(weight: torch.Tensor, time_kernel: int, *, method: str = "mean") -> torch.Tensor:
    """One 2D convolution kernel (O, I, kh, kw) as a 3D one (O, I, t, kh, kw).

    ``"mean"``: ``W3[:, :, j] = W / t`` for every j (I3D's "bootstrapping": a clip of
    identical frames gives the 2D response wherever the t taps see frames);
    ``"center"``: ``W3[:, :, t // 2] = W``, zeros elsewhere (exactly the 2D response on
    every frame of such a clip).

    Raises:
        ValueError: ``weight`` is not 4-dimensional, ``time_kernel`` < 1, or an unknown method.
    """
    check_choice(method, METHODS, name="method")
    if weight.ndim != 4:
        raise ValueError(f"weight must be a (O, I, kh, kw) kernel, got shape {tuple(weight.shape)}")
    if isinstance(time_kernel, bool) or not isinstance(time_kernel, int) or time_kernel < 1:
        raise ValueError(f"time_kernel must be an int >= 1, got {time_kernel!r}")
    if method == "mean":
        return weight.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel
    out = weight.new_zeros((*weight.shape[:2], time_kernel, *weight.shape[2:]))
    out[:, :, time_kernel // 2] = weight
    return out


def inflate_state_dict(
    state_2d: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    method: str = "mean",
) -> dict[str, torch.Tensor]:
    """Fill a 3D model's state dict (``target``, for its keys and shapes) from a 2D one.

    Every tensor of the same shape is copied (BatchNorm, Linear, 1D convolutions such as
    ECA's, SE's MLP); every (O, I, kh, kw) kernel whose 3D twin is (O, I, t, kh, kw) is
    inflated with :func:`inflate_weight` (t from the 3D model: 1 for 1 x 1 convolutions).

    Raises:
        ValueError: the key sets differ, or a pair of tensors is neither equal-shaped nor
            an inflatable kernel (one message listing them).
    """
    unknown = sorted(set(state_2d) - set(target))
    missing = sorted(set(target) - set(state_2d))
    bad = []
    out: dict[str, torch.Tensor] = {}
    for key, goal in target.items():
        if key not in state_2d:
            continue
        value = state_2d[key]
        shape, want = tuple(value.shape), tuple(goal.shape)
        if shape == want:
            out[key] = value.detach().clone()
        elif len(shape) == 4 and len(want) == 5 and want[:2] == shape[:2] and want[3:] == shape[2:]:
            out[key] = inflate_weight(value.detach(), want[2], method=method)
        else:
            bad.append(f"{key}: 2D {shape} vs 3D {want}")
    problems = []
    if unknown:
        problems.append(f"keys the 3D model lacks: {_few(unknown)} (attention attached with "
                        "attach_attention? inflate first, then attach)")
    if missing:
        problems.append(f"3D keys with no 2D weight: {_few(missing)}")
    if bad:
        problems.append(f"shapes that do not inflate: {_few(bad)}")
    if problems:
        raise ValueError("cannot inflate this state dict: " + "; ".join(problems))
    return out


def _few(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def _single(value: Any) -> Any:
    """A torchvision layer's (k, k) attribute as k when both entries agree."""
    if isinstance(value, tuple) and len(set(value)) == 1:
        return value[0]
    return value


def resnet_from_torchvision(model: nn.Module) -> ResNet:
    """An excite 2D :class:`~excite.models.ResNet` with a torchvision 2D ResNet's weights.

    The architecture is read from the modules (no torchvision import): block type,
    stage depths and widths, groups and group width (ResNeXt, Wide-ResNet), strides, the
    stem and the head. The state dict loads strictly (torchvision and excite share the
    parameter names), so the two compute the same logits.

    Raises:
        ValueError: ``model`` is not shaped like a torchvision ResNet (``conv1``, ``bn1``,
            ``maxpool``, ``layer1``…, ``fc``; BasicBlock or Bottleneck stages), uses
            dilation, or has attention attached.
    """
    conv1 = getattr(model, "conv1", None)
    fc = getattr(model, "fc", None)
    stages = []
    while isinstance(getattr(model, f"layer{len(stages) + 1}", None), nn.Sequential):
        stages.append(getattr(model, f"layer{len(stages) + 1}"))
    if not isinstance(conv1, nn.Conv2d) or not isinstance(fc, nn.Linear) or not stages:
        raise ValueError(
            f"{type(model).__name__} is neither an excite ResNet nor shaped like a torchvision "
            "2D ResNet (conv1: Conv2d, bn1, maxpool, layer1..layerS, fc: Linear)"
        )
    first = stages[0][0]
    bottleneck = hasattr(first, "conv3")
    for s, stage in enumerate(stages, start=1):
        for b, block in enumerate(stage):
            name = f"layer{s}.{b}"
            if "attention" in block._modules:
                raise ValueError(
                    f"{name} has attached attention; inflate the plain model and attach "
                    "attention to the 3D one"
                )
            convs = [getattr(block, f"conv{i}", None) for i in (1, 2, 3) if bottleneck or i < 3]
            if not all(isinstance(c, nn.Conv2d) for c in convs):
                raise ValueError(f"{name} is not a torchvision BasicBlock / Bottleneck")
            if any(c.dilation != (1, 1) for c in convs):
                raise ValueError(f"{name} uses dilation, which excite's ResNet does not build")
    widths = [
        (stage[0].bn3.num_features // 4) if bottleneck else stage[0].bn2.num_features
        for stage in stages
    ]
    groups = first.conv2.groups
    base_width = (first.conv2.out_channels // groups) * 64 // widths[0] if bottleneck else 64
    stride_in_1x1 = bottleneck and any(stage[0].conv1.stride[0] > 1 for stage in stages)
    strides = [
        max(stage[0].conv1.stride[0], stage[0].conv2.stride[0]) if bottleneck
        else stage[0].conv1.stride[0]
        for stage in stages
    ]
    pool = getattr(model, "maxpool", None)
    pool_options: dict[str, Any] = {"stem_pool": isinstance(pool, nn.MaxPool2d)}
    if isinstance(pool, nn.MaxPool2d):
        pool_options.update(stem_pool_kernel_size=pool.kernel_size, stem_pool_stride=pool.stride)
    excite = ResNet(
        Bottleneck if bottleneck else BasicBlock,
        [len(stage) for stage in stages],
        num_classes=fc.out_features,
        in_channels=conv1.in_channels,
        spatial_dims=2,
        widths=widths,
        strides=strides,
        stem_channels=conv1.out_channels,
        stem_kernel_size=_single(conv1.kernel_size),
        stem_stride=_single(conv1.stride),
        stem_padding=_single(conv1.padding),
        groups=groups,
        base_width=base_width,
        stride_in_1x1=stride_in_1x1,
        **pool_options,
    )
    try:
        excite.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ValueError(
            f"{type(model).__name__} does not match the excite ResNet read from its structure: "
            f"{first_line}"
        ) from None
    return _like(excite, model)


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    tensor = next((t for t in (*old.parameters(), *old.buffers()) if t.is_floating_point()), None)
    if tensor is not None:
        new = new.to(device=tensor.device, dtype=tensor.dtype)
    return new.train(old.training)


def inflate(
    model_2d: nn.Module,
    *,
    time_kernel: int | Mapping[str, int] = 3,
    method: str = "mean",
) -> ResNet:
    """Build the 3D (I3D-layout) twin of a 2D ResNet and fill it with inflated weights.

    The 3D model is the same :class:`~excite.models.ResNet` (same blocks, widths,
    attention and its options) at ``spatial_dims=3`` with ``time_kernel=``: every k x k
    convolution becomes t x k x k, nothing strides in time (stem stride (1, s, s),
    max-pool 1 x 3 x 3, blocks (1, s, s)); 1 x 1 convolutions become 1 x 1 x 1. The
    attention modules are built by the same factory with the same options at rank 3 (a
    2D CBAM with ``kernel_size=7`` gets a 7 x 7 x 7 spatial kernel), and their weights
    come from the 2D ones: SE / ECA / CBAM-channel MLPs and 1D convolutions are copied,
    a k x k spatial convolution (CBAM's, SAM's) fills the t frames of its 3D kernel by
    the same method (t read from that kernel).
    BatchNorm statistics and the classifier are copied. The result is in the 2D
    model's train/eval mode, on its device and dtype.

    ``create_model(name, spatial_dims=3, time_kernel=t, ...)`` (or ``excite train
    --model-option time_kernel=t``) builds the same architecture, so the inflated
    weights, saved with safetensors, load into it.

    Args:
        model_2d: an excite 2D ResNet (``create_model("resnet50", attention="se")``, any
            attention) or a torchvision 2D ResNet / ResNeXt / Wide-ResNet (read with
            :func:`resnet_from_torchvision`).
        time_kernel: t, odd; or a mapping with keys "stem", "layer1" … "layerS" and "*"
            (the rest), e.g. ``{"stem": 5}`` for a 5 x 7 x 7 stem and 3 x 3 x 3 blocks.
        method: "mean" (I3D: repeat along time and divide by t) or "center" (the 2D
            kernel on the centre frame, zeros elsewhere).

    Returns:
        The 3D model (a new module; ``model_2d`` is unchanged).

    Raises:
        TypeError: ``model_2d`` is not an ``nn.Module``.
        ValueError: not a 2D ResNet of a supported layout (custom stem or conv
            builders), attention attached with :func:`excite.attach_attention`, a bad
            ``time_kernel`` or ``method``.
    """
    if not isinstance(model_2d, nn.Module):
        raise TypeError(f"model_2d must be an nn.Module, got {type(model_2d).__name__}")
    check_choice(method, METHODS, name="method")
    source = model_2d if isinstance(model_2d, ResNet) else resnet_from_torchvision(model_2d)
    if source.spatial_dims != 2:
        raise ValueError(
            f"inflate takes a 2D model, got one with spatial_dims={source.spatial_dims}"
        )
    options = {**source.build_options, "spatial_dims": 3, "time_kernel": time_kernel}
    model_3d = ResNet(**options)
    state = inflate_state_dict(source.state_dict(), model_3d.state_dict(), method=method)
    model_3d.load_state_dict(state, strict=True)
    if hasattr(model_2d, "model_name"):
        model_3d.model_name = model_2d.model_name  # type: ignore[assignment]
    return _like(model_3d, source)  # type: ignore[return-value]
