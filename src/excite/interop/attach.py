"""Put attention into a network someone else built: :func:`attach_attention`.

A torchvision ResNet / ResNeXt / Wide-ResNet, a torchvision VideoResNet (r3d_18, mc3_18,
r2plus1d_18), a timm ``ResNet`` or an excite ResNet gets an attention module before the
identity addition of every residual block, in place, without touching a single existing
parameter or buffer::

    x ─┬─ conv … last norm ─ [attention] ─(+)─ relu        (where="residual")
       └──────── identity / downsample ────┘

Blocks are recognised by their structure (attribute names and module types), never by
importing torchvision or timm, so this works where neither is installed. Where the new
module goes:

==========================  ==================================  =========================
block                       new module (state-dict key)          how it runs
==========================  ==================================  =========================
excite BasicBlock/Bottlen.  ``layerS.B.attention``               the block's own slot
timm BasicBlock/Bottleneck  ``layerS.B.se``                      timm's own slot (``se``)
torchvision (2D and video)  ``layerS.B.attention``               forward hook on the
                                                                 block's last norm
==========================  ==================================  =========================

A family whose ``placement`` is "stage" goes once at the end of each stage instead
(``layerS.attention``, the last child of the stage's ``nn.Sequential``). Every existing
key keeps its name and value, so ``model.load_state_dict(pretrained, strict=False)``
works before or after; the attached torchvision layout is excite's, so
``convert_state_dict(state, source="torchvision")`` of an attached torchvision model
loads into ``create_model(name, attention=...)``.

``init="identity"`` wraps each new module in
:class:`~excite.models.resnet.ScaledAttention`: ``y = x + alpha * (attention(x) - x)``
with ``alpha = 0``, so the network computes exactly what it did before (keys
``….module.*`` and ``….alpha``; ``create_model(..., attention_init="identity")`` builds
the same layout).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

from excite.checks import check_choice
from excite.layers.factory import AttentionFactory, AttentionLike, reset_attention, resolve_attention
from excite.models import resnet as excite_resnet
from excite.models.resnet import ATTENTION_INITS, ScaledAttention
from excite.models.x3d import X3DBlock

__all__ = ["AttachReport", "Insertion", "attach_attention", "find_residual_blocks"]

Where = Union[str, Callable[[str, nn.Module], bool]]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Insertion:
    """One attention module added by :func:`attach_attention`.

    Attributes:
        name: its qualified name in the model (state-dict prefix), e.g. "layer1.0.attention".
        after: the module whose output it transforms, e.g. "layer1.0.bn2".
        channels: C it was built for.
        spatial_dims: the rank d it was built for.
        parameters: its parameter count (including ``alpha`` for ``init="identity"``).
    """

    name: str
    after: str
    channels: int
    spatial_dims: int
    parameters: int


@dataclass(frozen=True)
class AttachReport:
    """What :func:`attach_attention` did.

    Attributes:
        attention: the factory's ``repr`` (which attention, with which options).
        where: "residual", the pattern, or the predicate's name.
        init: "default" or "identity".
        inserted: every insertion point, in model order.
        skipped: ``(module name, reason)`` for every candidate left alone.
    """

    attention: str
    where: str
    init: str
    inserted: tuple[Insertion, ...]
    skipped: tuple[tuple[str, str], ...]

    @property
    def parameters(self) -> int:
        """New parameters in total."""
        return sum(i.parameters for i in self.inserted)

    def __str__(self) -> str:
        lines = [
            f"attached {self.attention} (where={self.where}, init={self.init}): "
            f"{len(self.inserted)} module(s), {self.parameters:,} new parameters"
        ]
        width = max((len(i.name) for i in self.inserted), default=4)
        for i in self.inserted:
            lines.append(
                f"  {i.name:<{width}}  after {i.after}  C={i.channels}  {i.spatial_dims}D  "
                f"{i.parameters:,} params"
            )
        for name, reason in self.skipped:
            lines.append(f"  skipped {name}: {reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- structure


def _rank_of(module: nn.Module) -> int | None:
    """The rank d of the first convolution inside ``module`` (itself included)."""
    for m in module.modules():
        if isinstance(m, _CONVS):
            return len(m.kernel_size)
    return None


def _norm_channels(norm: nn.Module) -> int | None:
    if isinstance(norm, nn.GroupNorm):
        return norm.num_channels
    return getattr(norm, "num_features", None)


def _last_norm(block: nn.Module) -> tuple[str, nn.Module] | None:
    """The norm that ends a torchvision/timm residual branch: ``bn3``/``bn2``, or the last
    entry of a ``conv3``/``conv2`` Sequential (torchvision's video blocks)."""
    for conv, norm in (("conv3", "bn3"), ("conv2", "bn2")):
        if not hasattr(block, conv):
            continue
        candidate = getattr(block, norm, None)
        if isinstance(candidate, _NORMS):
            return norm, candidate
        seq = getattr(block, conv)
        if isinstance(seq, nn.Sequential) and len(seq) and isinstance(seq[-1], _NORMS):
            return f"{conv}.{len(seq) - 1}", seq[-1]
        return None
    return None


@dataclass(frozen=True)
class ResidualBlock:
    """A residual block found by :func:`find_residual_blocks`.

    Attributes:
        name: its qualified name.
        module: the block.
        kind: "excite", "timm" or "torchvision".
        slot: the attribute that holds (or will hold) its attention.
        norm_name: the name (relative to the block) of the module the attention follows.
        norm: that module for torchvision blocks (the attention runs on its output), else
            None (the block runs its own slot).
        channels, spatial_dims: C and d of the attention it takes.
    """

    name: str
    module: nn.Module
    kind: str
    slot: str
    norm_name: str
    norm: nn.Module | None
    channels: int
    spatial_dims: int

    def existing(self) -> nn.Module | None:
        """The attention already in the slot (None when the slot is free)."""
        current = getattr(self.module, self.slot, None)
        if current is None or isinstance(current, nn.Identity):
            return None
        return current


def _residual_block(name: str, m: nn.Module) -> ResidualBlock | None:
    if isinstance(m, (excite_resnet.BasicBlock, excite_resnet.Bottleneck)):
        position = m.attention_position
        first = next(c for c in m.conv1.modules() if isinstance(c, _CONVS))
        channels = first.in_channels if position == "pre" else _norm_channels(m.last_norm)
        norm_name = "bn3" if isinstance(m, excite_resnet.Bottleneck) else "bn2"
        return ResidualBlock(name, m, "excite", "attention", norm_name, None, int(channels),
                             len(first.kernel_size))
    if isinstance(m, X3DBlock):
        return ResidualBlock(name, m, "excite", "attention", "bn_b", None, m.bn_b.num_features, 3)
    if not (hasattr(m, "conv1") and hasattr(m, "conv2") and hasattr(m, "downsample")):
        return None
    found = _last_norm(m)
    rank = _rank_of(m.conv2) if isinstance(m.conv2, nn.Module) else None
    if found is None or rank is None:
        return None
    norm_name, norm = found
    channels = _norm_channels(norm)
    if channels is None:
        return None
    # timm's blocks own an attention slot ``se`` (None when the model has no attention)
    kind, slot = ("timm", "se") if hasattr(m, "se") and hasattr(m, "act1") else ("torchvision", "attention")
    return ResidualBlock(name, m, kind, slot, norm_name, norm, int(channels), rank)


def find_residual_blocks(model: nn.Module) -> list[ResidualBlock]:
    """The residual blocks of ``model`` that :func:`attach_attention` recognises, in order.

    Recognised by structure: excite's BasicBlock / Bottleneck / X3D block (by class);
    torchvision's and timm's BasicBlock / Bottleneck and torchvision's video blocks (a
    module with ``conv1``, ``conv2`` and ``downsample`` whose branch ends in a norm:
    ``bn2`` / ``bn3``, or the last entry of a ``conv2`` / ``conv3`` Sequential); timm's
    have ``se`` and ``act1``.
    """
    blocks = []
    for name, m in model.named_modules():
        block = _residual_block(name, m)
        if block is not None:
            blocks.append(block)
    return blocks


# --------------------------------------------------------------------------- insertion


class _AfterModule:
    """Forward hook that runs ``owner.<slot>`` on a module's output.

    It holds the owner, not the attention module, so ``copy.deepcopy`` / pickling of the
    model carry the hook over to the copy's own attention module.
    """

    def __init__(self, owner: nn.Module, slot: str) -> None:
        self.owner = owner
        self.slot = slot

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        out = getattr(self.owner, self.slot)(output)
        # torchvision adds the shortcut in place (``out += identity``), which autograd
        # refuses on a view returned by a custom autograd Function: hand it a fresh tensor
        if out.requires_grad and out._is_view():
            out = out.clone()
        return out


@dataclass
class _Plan:
    name: str           # qualified name of the new module
    owner: nn.Module    # the module that registers it
    slot: str           # its attribute name in ``owner``
    hook_on: nn.Module | None  # run it on this module's output (None: owner runs it)
    after: str
    channels: int
    spatial_dims: int
    like: nn.Module     # device / dtype / mode to copy


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _plan_residual(model: nn.Module, placement: str) -> tuple[list[_Plan], list[tuple[str, str]]]:
    blocks = find_residual_blocks(model)
    if not blocks:
        raise ValueError(
            f"found no residual blocks in {type(model).__name__} (recognised: excite, "
            "torchvision and timm BasicBlock / Bottleneck, torchvision VideoResNet blocks); "
            "pass where= a module-name pattern (e.g. 'features.*') or a predicate "
            "(name, module) -> bool to insert after chosen modules"
        )
    plans: list[_Plan] = []
    skipped: list[tuple[str, str]] = []
    if placement == "stage":
        by_name = {b.name: b for b in blocks}
        for name, stage in model.named_modules():
            if not isinstance(stage, nn.Sequential):
                continue
            members = [by_name.get(_join(name, child)) for child in stage._modules]
            members = [b for b in members if b is not None]
            if not members:
                continue
            if "attention" in stage._modules:
                skipped.append((name, f"the stage already has attention at {_join(name, 'attention')}"))
                continue
            last = members[-1]
            plans.append(_Plan(_join(name, "attention"), stage, "attention", None, last.name,
                               last.channels, last.spatial_dims, last.module))
        return plans, skipped
    for block in blocks:
        present = block.existing()
        if present is not None:
            skipped.append((block.name, f"already has attention at {_join(block.name, block.slot)} "
                                        f"({type(present).__name__})"))
            continue
        if block.kind == "torchvision" and "attention" in vars(block.module):
            skipped.append((block.name, "has a non-module attribute named 'attention'"))
            continue
        hook_on = block.norm if block.kind == "torchvision" else None
        plans.append(_Plan(_join(block.name, block.slot), block.module, block.slot, hook_on,
                           _join(block.name, block.norm_name), block.channels,
                           block.spatial_dims, block.module))
    return plans, skipped


def _output_shape(module: nn.Module) -> tuple[int, int] | None:
    """(C, d) of a module's output: its own (conv / norm) or its last conv / norm's."""
    for m in reversed(list(module.modules())):
        if isinstance(m, _CONVS):
            return m.out_channels, len(m.kernel_size)
        if isinstance(m, _NORMS):
            rank = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3,
                    nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}.get(type(m))
            rank = rank or _rank_of(module)
            channels = _norm_channels(m)
            if rank is not None and channels is not None:
                return int(channels), rank
    return None


def _plan_matches(
    model: nn.Module, matches: list[tuple[str, nn.Module]]
) -> tuple[list[_Plan], list[tuple[str, str]]]:
    plans: list[_Plan] = []
    skipped: list[tuple[str, str]] = []
    for name, m in matches:
        if isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            skipped.append((name, f"a {type(m).__name__} has no forward to follow"))
            continue
        if "attention" in m._modules or "attention" in vars(m):
            skipped.append((name, f"already has an attribute {_join(name, 'attention')}"))
            continue
        shape = _output_shape(m)
        if shape is None:
            skipped.append((name, "no convolution or norm in it to read channels and rank from"))
            continue
        # a Sequential runs a new last child itself; any other module gets a forward hook
        hook_on = None if isinstance(m, nn.Sequential) else m
        plans.append(_Plan(_join(name, "attention"), m, "attention", hook_on, name,
                           shape[0], shape[1], m))
    return plans, skipped


def _like(module: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return None, None


def _describe_where(where: Where) -> str:
    if isinstance(where, str):
        return where
    return getattr(where, "__qualname__", None) or repr(where)


def attach_attention(
    model: nn.Module,
    attention: AttentionLike,
    *,
    attention_kwargs: Mapping[str, Any] | None = None,
    where: Where = "residual",
    init: str = "default",
) -> AttachReport:
    """Insert attention into an existing network, in place, keeping every existing weight.

    The rank (1D/2D/3D) and the channel count of every new module come from the
    convolutions and norms around it. Nothing is changed unless every planned insertion
    can be built: on any error the model is left as it was.

    Args:
        model: a torchvision ResNet / ResNeXt / Wide-ResNet / VideoResNet, a timm
            ``ResNet``, an excite model, or any network (with ``where=`` a pattern or a
            predicate).
        attention: which attention: a name ("cbam", "se", … ``excite.list_attention()``),
            an ``nn.Module`` class, or an :class:`~excite.layers.AttentionFactory`.
        attention_kwargs: options for every module (e.g. ``{"reduction": 8}``).
        where: "residual" (before the identity addition of every residual block; see the
            module docstring), a pattern matched with :func:`fnmatch.fnmatchcase` against
            module names ("layer4.*.conv2", "features.*"), or a predicate
            ``(name, module) -> bool``; with a pattern or predicate the new module runs on
            each matched module's output and is registered as its child ``attention``
            (``name.attention``).
        init: "default" (each module's own initialisation, including the family's
            ``reset_parameters``) or "identity" (wrapped in
            :class:`~excite.models.resnet.ScaledAttention` with alpha = 0:
            ``y = x + alpha * (attention(x) - x)`` is exactly ``x`` until training moves
            alpha, so the network starts computing what it did).

    Returns:
        An :class:`AttachReport` listing every insertion and every skipped candidate.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; ``where`` is neither a string nor a
            callable; an attention option the module does not take.
        ValueError: attention is "none"; no residual block found; every candidate
            already has attention (attaching twice); ``where`` matched no module; an
            invalid ``init`` or attention option.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_choice(init, ATTENTION_INITS, name="init")
    factory: AttentionFactory = resolve_attention(attention, attention_kwargs)
    if factory.is_none:
        raise ValueError("attention is 'none': there is nothing to attach; pass a name such as 'cbam'")
    if isinstance(where, str) and where == "residual":
        plans, skipped = _plan_residual(model, factory.placement)
    elif isinstance(where, str) or callable(where):
        if isinstance(where, str):
            matches = [(n, m) for n, m in model.named_modules() if n and fnmatch.fnmatchcase(n, where)]
        else:
            matches = [(n, m) for n, m in model.named_modules() if n and where(n, m)]
        if not matches:
            examples = ", ".join(n for n, _ in list(model.named_modules())[1:6])
            raise ValueError(
                f"where={_describe_where(where)!r} matched no module of {type(model).__name__}; "
                f"module names look like: {examples}"
            )
        plans, skipped = _plan_matches(model, matches)
    else:
        raise TypeError(
            "where must be 'residual', a module-name pattern (str) or a predicate "
            f"(name, module) -> bool, got {where!r}"
        )
    if not plans:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise ValueError(
            f"nothing to attach to in {type(model).__name__}: all {len(skipped)} candidate(s) "
            f"were skipped ({reasons}{'; …' if len(skipped) > 3 else ''}); attach attention "
            "once, to a model without it"
        )

    # build everything first, so that a failing build leaves the model untouched
    built: list[nn.Module] = []
    for plan in plans:
        module = factory(plan.channels, spatial_dims=plan.spatial_dims)
        reset_attention(module)
        if init == "identity":
            module = ScaledAttention(module)
        device, dtype = _like(plan.like)
        if device is not None:
            module = module.to(device=device, dtype=dtype)
        built.append(module.train(plan.like.training))

    inserted = []
    for plan, module in zip(plans, built):
        setattr(plan.owner, plan.slot, module)
        if plan.hook_on is not None:
            plan.hook_on.register_forward_hook(_AfterModule(plan.owner, plan.slot))
        inserted.append(Insertion(plan.name, plan.after, plan.channels, plan.spatial_dims,
                                  sum(p.numel() for p in module.parameters())))
    return AttachReport(repr(factory), _describe_where(where), init, tuple(inserted), tuple(skipped))
