"""Other codebases' checkpoints as excite state dicts: :func:`convert_state_dict`.

=================  =====================================================  ============================
source             checkpoints                                            load into
=================  =====================================================  ============================
"official-cbam"    the CBAM authors' ``ResidualNet`` (Jongchan/attention- ``create_model("resnet50",
                   module; ImageNet and CIFAR layouts, depths 18/34/50/   attention="cbam",
                   101), as released: ``{"state_dict": …}`` with a        attention_kwargs={"variant":
                   DataParallel ``module.`` prefix                        "official"})`` (see below)
"timm"             timm ``ResNet`` with ``attn_layer`` "se", "eca",       ``create_model("resnet50",
                   "cbam": ``resnet*``, ``seresnet*``, ``ecaresnet*``,    attention=…)`` (see below)
                   ``ecaresnet*d``
"torchvision"      torchvision ResNet / ResNeXt / VideoResNet, with or    ``create_model(name, …)``
                   without attention attached by excite
"pytorchvideo"     pytorchvideo / SlowFast X3D-XS/S/M/L                   ``create_model("x3d_m")``
                   (``{"model_state": …}``)
=================  =====================================================  ============================

Key maps (``…`` is the block prefix ``layerS.B``):

- official-cbam: ``….cbam.ChannelGate.mlp.1.*`` → ``….attention.channel.fc1.*``,
  ``….cbam.ChannelGate.mlp.3.*`` → ``….attention.channel.fc2.*``,
  ``….cbam.SpatialGate.spatial.conv.weight`` → ``….attention.spatial.conv.weight``,
  ``….cbam.SpatialGate.spatial.bn.*`` → ``….attention.spatial.norm.*``; the backbone's
  names are torchvision's (the official code strides in the 3 x 3 convolution, as
  torchvision does). The CIFAR layout is ``create_model("resnet18", attention="cbam",
  attention_kwargs={"variant": "official"}, num_classes=10, stem_kernel_size=3,
  stem_stride=1, stem_pool=False)`` (its ``avg_pool2d(x, 4)`` head is the global average
  at 32 x 32 input). BAM checkpoints (``bam1.*``) are not converted.
- timm: ``….se.fc1/fc2.*`` (SE, 1 x 1 convolutions → Linear) → ``….attention.fc1/fc2.*``
  (``attention="se", attention_kwargs={"divisor": 8}``: timm rounds C/16 to a multiple
  of 8); ``….se.conv.weight`` (ECA) → ``….attention.conv.weight`` (``attention="eca"``);
  ``….se.channel.fc1/fc2.weight`` → ``….attention.channel.fc1/fc2.weight``,
  ``….se.spatial.conv.conv.weight`` → ``….attention.spatial.conv.weight``,
  ``….se.spatial.conv.bn.*`` → ``….attention.spatial.norm.*`` (``attention="cbam",
  attention_kwargs={"norm": True, "norm_momentum": 0.1}``: no MLP bias, [mean, max]
  maps, BatchNorm after the 7 x 7 conv); ``….se.t|p|g|z.*`` / ``….se.norm.*``
  (``NonLocalAttn``, ``attn_layer="nl"``) → ``….attention.theta|phi|g|w_z.*`` /
  ``….attention.norm.*`` (``attention="nonlocal", attention_kwargs={"reduction": 8,
  "divisor": 8, "scale": "channels"}``). The ResNet-D layout of ``ecaresnet*d`` keeps
  timm's names (``conv1.0`` … ``conv1.6``, ``downsample.1`` / ``.2``): build it with
  ``stem_type="deep", shortcut="avgpool"``.
- torchvision: :func:`excite.models.weights.convert_torchvision_state_dict` (the video
  ResNets' ``convK.0`` / ``convK.1`` → ``convK`` / ``bnK``, ``stem.*`` → ``conv1`` /
  ``bn1``); everything else keeps its name.
- pytorchvideo: ``blocks.0.conv.conv_t`` / ``conv_xy`` / ``blocks.0.norm`` → ``stem.0`` /
  ``stem.1`` / ``stem.2``; ``blocks.S.res_blocks.B.branch1_conv`` / ``branch1_norm`` →
  ``stages.{S-1}.B.downsample.0`` / ``.1``; ``branch2.conv_a|b|c`` → ``conv_a|b|c``,
  ``branch2.norm_a|c`` → ``bn_a|c``, ``branch2.norm_b.0`` → ``bn_b``,
  ``branch2.norm_b.1.block.0|2`` (SE, 1 x 1 x 1 convolutions) → ``attention.fc1|fc2``;
  ``blocks.5.pool.pre_conv`` / ``pre_norm`` / ``post_conv`` → ``head_conv`` / ``head_bn``
  / ``head_proj``; ``blocks.5.proj`` → ``fc``. pytorchvideo has no BatchNorm on a
  shortcut whose widths match (stage 1's, where SlowFast has one): that BatchNorm is
  filled as the identity (gamma 1, beta 0, mean 0, variance 1 - eps, so
  ``(x - 0) / sqrt(1 - eps + eps) = x``). pytorchvideo's head ends with a softmax, which
  excite leaves to the loss: excite's logits are its pre-softmax outputs.

Files are read by :func:`load_checkpoint`: safetensors, or ``torch.load(weights_only=True)``
(no arbitrary object is ever unpickled).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from torch import nn

from excite.checks import check_choice
from excite.errors import ExciteError, require
from excite.models.weights import convert_torchvision_state_dict

__all__ = [
    "SOURCES",
    "WeightsReport",
    "convert_state_dict",
    "load_checkpoint",
    "load_weights_into",
    "unwrap_checkpoint",
]

SOURCES = ("official-cbam", "timm", "torchvision", "pytorchvideo")

# where training scripts keep the weights inside a saved dict
_WRAPPERS = ("state_dict", "model_state", "model")

# a parameter or buffer of a convolution, BatchNorm or Linear
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_BN = _PARAM


def unwrap_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a saved checkpoint, without wrappers and DataParallel prefixes.

    Takes a state dict, or a training checkpoint holding one under "state_dict" (the
    official CBAM release, timm's train script), "model_state" (pytorchvideo, SlowFast)
    or "model"; strips a ``module.`` prefix that every key has (``nn.DataParallel``).

    Raises:
        TypeError: not a mapping, or it holds non-tensor values (their keys are listed).
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a mapping of names to tensors, got {type(checkpoint).__name__}")
    for key in _WRAPPERS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            checkpoint = inner
            break
    not_tensors = sorted(str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise TypeError(
            f"checkpoint entries {not_tensors[:8]} are not tensors; pass a state dict (or a "
            f"checkpoint holding one under {' / '.join(repr(k) for k in _WRAPPERS)})"
        )
    keys = list(checkpoint)
    if keys and all(str(k).startswith("module.") for k in keys):
        return {str(k)[len("module."):]: v for k, v in checkpoint.items()}
    return {str(k): v for k, v in checkpoint.items()}


Rule = tuple["re.Pattern[str]", str, Callable[[torch.Tensor], torch.Tensor] | None]


def _flatten(t: torch.Tensor) -> torch.Tensor:
    """A 1 x 1 (x 1) convolution's weight (O, I, 1, …) as the Linear weight (O, I)."""
    return t.reshape(t.shape[0], t.shape[1]) if t.ndim > 2 else t


def _rule(pattern: str, replacement: str, fix: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Rule:
    return re.compile(pattern), replacement, fix


_BLOCK = r"^(layer\d+\.\d+)\."
_BACKBONE = [  # torchvision names, kept as they are
    _rule(rf"^(conv1|bn1|fc)\.{_PARAM}$", r"\1.\2"),
    _rule(rf"{_BLOCK}(conv[123]|bn[123])\.{_PARAM}$", r"\1.\2.\3"),
    _rule(rf"{_BLOCK}downsample\.([01])\.{_PARAM}$", r"\1.downsample.\2.\3"),
]

_OFFICIAL_CBAM = [
    *_BACKBONE,
    _rule(rf"{_BLOCK}cbam\.ChannelGate\.mlp\.1\.(weight|bias)$", r"\1.attention.channel.fc1.\2"),
    _rule(rf"{_BLOCK}cbam\.ChannelGate\.mlp\.3\.(weight|bias)$", r"\1.attention.channel.fc2.\2"),
    _rule(rf"{_BLOCK}cbam\.SpatialGate\.spatial\.conv\.weight$", r"\1.attention.spatial.conv.weight"),
    _rule(rf"{_BLOCK}cbam\.SpatialGate\.spatial\.bn\.{_BN}$", r"\1.attention.spatial.norm.\2"),
]

_TIMM = [
    *_BACKBONE,
    _rule(rf"^conv1\.([036])\.weight$", r"conv1.\1.weight"),  # deep stem (resnet*d)
    _rule(rf"^conv1\.([14])\.{_BN}$", r"conv1.\1.\2"),
    _rule(rf"{_BLOCK}downsample\.([12])\.{_PARAM}$", r"\1.downsample.\2.\3"),  # avg-pool shortcut
    _rule(rf"{_BLOCK}se\.(fc[12])\.weight$", r"\1.attention.\2.weight", _flatten),  # SEModule
    _rule(rf"{_BLOCK}se\.(fc[12])\.bias$", r"\1.attention.\2.bias"),
    _rule(rf"{_BLOCK}se\.conv\.weight$", r"\1.attention.conv.weight"),  # EcaModule
    _rule(rf"{_BLOCK}se\.channel\.(fc[12])\.weight$", r"\1.attention.channel.\2.weight", _flatten),
    _rule(rf"{_BLOCK}se\.channel\.(fc[12])\.bias$", r"\1.attention.channel.\2.bias"),
    _rule(rf"{_BLOCK}se\.spatial\.conv\.conv\.weight$", r"\1.attention.spatial.conv.weight"),
    _rule(rf"{_BLOCK}se\.spatial\.conv\.bn\.{_BN}$", r"\1.attention.spatial.norm.\2"),
    # NonLocalAttn ("nl"); names as excite.layers.non_local.non_local_from_timm
    *(_rule(rf"{_BLOCK}se\.{t}\.(weight|bias)$", rf"\1.attention.{e}.\2")
      for t, e in (("t", "theta"), ("p", "phi"), ("g", "g"), ("z", "w_z"))),
    _rule(rf"{_BLOCK}se\.norm\.{_BN}$", r"\1.attention.norm.\2"),
]

_PV_BLOCK = r"^blocks\.(\d+)\.res_blocks\.(\d+)\."
_PYTORCHVIDEO = [
    _rule(r"^blocks\.0\.conv\.conv_t\.weight$", "stem.0.weight"),
    _rule(r"^blocks\.0\.conv\.conv_xy\.weight$", "stem.1.weight"),
    _rule(rf"^blocks\.0\.norm\.{_BN}$", r"stem.2.\1"),
    _rule(rf"{_PV_BLOCK}branch1_conv\.weight$", r"stages.{S}.\2.downsample.0.weight"),
    _rule(rf"{_PV_BLOCK}branch1_norm\.{_BN}$", r"stages.{S}.\2.downsample.1.\3"),
    _rule(rf"{_PV_BLOCK}branch2\.conv_([abc])\.weight$", r"stages.{S}.\2.conv_\3.weight"),
    _rule(rf"{_PV_BLOCK}branch2\.norm_([ac])\.{_BN}$", r"stages.{S}.\2.bn_\3.\4"),
    _rule(rf"{_PV_BLOCK}branch2\.norm_b\.0\.{_BN}$", r"stages.{S}.\2.bn_b.\3"),
    _rule(rf"{_PV_BLOCK}branch2\.norm_b\.1\.block\.0\.weight$", r"stages.{S}.\2.attention.fc1.weight", _flatten),
    _rule(rf"{_PV_BLOCK}branch2\.norm_b\.1\.block\.0\.bias$", r"stages.{S}.\2.attention.fc1.bias"),
    _rule(rf"{_PV_BLOCK}branch2\.norm_b\.1\.block\.2\.weight$", r"stages.{S}.\2.attention.fc2.weight", _flatten),
    _rule(rf"{_PV_BLOCK}branch2\.norm_b\.1\.block\.2\.bias$", r"stages.{S}.\2.attention.fc2.bias"),
    _rule(r"^blocks\.\d+\.pool\.pre_conv\.weight$", "head_conv.weight"),
    _rule(rf"^blocks\.\d+\.pool\.pre_norm\.{_BN}$", r"head_bn.\1"),
    _rule(r"^blocks\.\d+\.pool\.post_conv\.weight$", "head_proj.weight"),
    _rule(r"^blocks\.\d+\.proj\.(weight|bias)$", r"fc.\1"),
]


def _apply(rules: Sequence[Rule], state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        for pattern, replacement, fix in rules:
            match = pattern.match(key)
            if match is None:
                continue
            new_key = match.expand(replacement)
            if "{S}" in new_key:  # pytorchvideo: blocks.S is excite's stages.(S-1)
                new_key = new_key.replace("{S}", str(int(match.group(1)) - 1))
            out[new_key] = fix(value) if fix is not None else value
            break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) are not in the {source!r} layout this converter knows "
            f"(see excite.interop.convert): {_few(unknown)}"
        )
    return out


def _few(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def _pytorchvideo(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = _apply(_PYTORCHVIDEO, state, "pytorchvideo")
    eps = 1e-5  # nn.BatchNorm3d's default, as in excite's X3D blocks
    for key in [k for k in out if k.endswith(".downsample.0.weight")]:
        prefix = key[: -len("0.weight")] + "1."
        if prefix + "weight" in out:
            continue
        channels = out[key].shape[0]
        like = out[key]
        out[prefix + "weight"] = torch.ones(channels, dtype=like.dtype)
        out[prefix + "bias"] = torch.zeros(channels, dtype=like.dtype)
        out[prefix + "running_mean"] = torch.zeros(channels, dtype=like.dtype)
        out[prefix + "running_var"] = torch.full((channels,), 1.0 - eps, dtype=like.dtype)
        out[prefix + "num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return out


_CONVERTERS: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "official-cbam": lambda state: _apply(_OFFICIAL_CBAM, state, "official-cbam"),
    "timm": lambda state: _apply(_TIMM, state, "timm"),
    "torchvision": convert_torchvision_state_dict,
    "pytorchvideo": _pytorchvideo,
}


def convert_state_dict(state_dict: Mapping[str, Any], *, source: str) -> dict[str, torch.Tensor]:
    """Rename (and reshape) another codebase's weights into excite's parameter names.

    The key maps are in the module docstring. The result is meant for
    ``model.load_state_dict(result)`` (strict) or :func:`load_weights_into`.

    Args:
        state_dict: a state dict, or a training checkpoint holding one (see
            :func:`unwrap_checkpoint`: "state_dict", "model_state", "model"; a
            DataParallel ``module.`` prefix is removed).
        source: "official-cbam", "timm", "torchvision" or "pytorchvideo".

    Returns:
        A new dict of tensors (1 x 1 convolution weights of SE / CBAM MLPs reshaped to
        the Linear layers excite uses).

    Raises:
        ValueError: an unknown ``source``; keys outside that source's layout (one message
            listing them).
        TypeError: not a mapping of tensors.
    """
    check_choice(source, SOURCES, name="source")
    return _CONVERTERS[source](unwrap_checkpoint(state_dict))


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a weights file without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else (``.pth``, ``.pt``,
    ``.tar``, ``.pyth``, ``.bin``) with ``torch.load(weights_only=True)`` on the CPU.
    Wrappers and ``module.`` prefixes are removed (:func:`unwrap_checkpoint`).

    Raises:
        FileNotFoundError: no such file.
        ExciteError: the file is corrupt, or holds Python objects other than tensors and
            plain containers (``weights_only`` refused them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        st = require("safetensors.torch", extra="train", purpose="reading .safetensors weights")
        try:
            return unwrap_checkpoint(st.load(path.read_bytes()))
        except Exception as exc:  # safetensors raises its own error types
            raise ExciteError(f"{path} is not a readable safetensors file ({exc})") from exc
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ExciteError(
            f"{path} holds objects that are not plain tensors and containers, which excite "
            f"does not unpickle ({first}); save model.state_dict() instead"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExciteError(f"{path} is not a readable torch checkpoint ({first})") from exc
    try:
        return unwrap_checkpoint(data)
    except TypeError as exc:
        raise ExciteError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_weights_into` loaded.

    Attributes:
        loaded: the model keys filled from the checkpoint.
        excluded: the model keys left at their values because ``exclude`` matched them.
        source: the converter used, or None for an excite state dict.
    """

    loaded: tuple[str, ...]
    excluded: tuple[str, ...]
    source: str | None


def load_weights_into(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    *,
    source: str | None = None,
    exclude: Sequence[str] = (),
) -> WeightsReport:
    """Fill ``model`` from a weights file or state dict, all or nothing.

    This is what ``excite train --init-from FILE`` runs: the file may be a converted
    checkpoint (``excite convert``), an excite run's ``best.safetensors``, or the state
    dict of a model that :func:`excite.attach_attention` changed (saved as safetensors
    or with ``torch.save``; for torchvision models give ``source="torchvision"``).

    Args:
        model: the model to fill (its keys and shapes decide).
        checkpoint: a path (see :func:`load_checkpoint`) or a state dict / checkpoint.
        source: convert first with :func:`convert_state_dict` (None: the keys are
            excite's already).
        exclude: :func:`fnmatch.fnmatchcase` patterns of keys to leave alone on both
            sides, e.g. ``("fc.*",)`` to start a new classifier head.

    Returns:
        A :class:`WeightsReport`.

    Raises:
        ValueError: checkpoint keys the model lacks, model keys the checkpoint lacks, or
            shape mismatches: one message listing them; the model is then unchanged.
        FileNotFoundError, ExciteError: see :func:`load_checkpoint`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    state = load_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else unwrap_checkpoint(checkpoint)
    if source is not None:
        state = convert_state_dict(state, source=source)

    def excluded(key: str) -> bool:
        return any(fnmatchcase(key, pattern) for pattern in exclude)

    own = model.state_dict()
    state = {k: v for k, v in state.items() if not excluded(k)}
    skipped = tuple(k for k in own if excluded(k))
    unknown = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state and not excluded(k))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    )
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} checkpoint key(s) not in the model: {_few(unknown)}")
    if missing:
        problems.append(f"{len(missing)} model key(s) missing from the checkpoint: {_few(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_few(mismatched)}")
    if problems:
        raise ValueError(f"the checkpoint does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=not skipped)
    return WeightsReport(tuple(state), skipped, source)
