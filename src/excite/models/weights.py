"""Load torchvision ResNet / ResNeXt / video ResNet weights into excite models.

2D ResNets use torchvision's parameter names already, so their state dicts load as is.
torchvision's video ResNets wrap each convolution and its BatchNorm in a Sequential
(``layer1.0.conv1.0`` / ``layer1.0.conv1.1``, ``stem.0`` / ``stem.1``); excite's single
block class names them ``conv1`` / ``bn1``. :func:`convert_torchvision_state_dict` is the
renaming behind ``excite.convert_state_dict(state, source="torchvision")`` (which also
reads the other codebases' checkpoints, see :mod:`excite.interop.convert`);
:func:`load_torchvision_state_dict` renames, loads everything, and reports the attention
parameters (which torchvision models do not have) as new.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LoadReport", "convert_torchvision_state_dict", "load_torchvision_state_dict"]

_BLOCK_KEY = re.compile(r"^(layer\d+\.\d+\.conv(\d))\.(\d+)\.(.+)$")
_STEM_KEY = re.compile(r"^stem\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LoadReport:
    """Outcome of :func:`load_torchvision_state_dict`.

    Attributes:
        loaded: model keys filled from the state dict.
        new: model keys left at their initial value (attention parameters and buffers).
    """

    loaded: tuple[str, ...]
    new: tuple[str, ...]


def convert_torchvision_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename a torchvision (video) ResNet state dict to excite's parameter names.

    ``stem.0`` → ``conv1`` and ``stem.1`` → ``bn1`` (R3D / MC3 stem); for R(2+1)D's
    two-convolution stem ``stem.{0,1,3}`` → ``conv1.{0,1,3}`` and ``stem.4`` → ``bn1``;
    in blocks ``convK.0`` → ``convK`` and ``convK.1`` → ``bnK``. 2D keys pass unchanged.
    """
    r2plus1d_stem = "stem.3.weight" in state_dict
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        stem = _STEM_KEY.match(key)
        block = _BLOCK_KEY.match(key)
        if stem:
            index, rest = int(stem.group(1)), stem.group(2)
            if r2plus1d_stem:
                new_key = f"bn1.{rest}" if index == 4 else f"conv1.{index}.{rest}"
            else:
                new_key = {0: "conv1", 1: "bn1"}.get(index, f"stem.{index}") + f".{rest}"
        elif block:
            prefix, k, index, rest = block.groups()
            if index == "0":
                new_key = f"{prefix}.{rest}"
            elif index == "1":
                new_key = f"{prefix[: -len('conv' + k)]}bn{k}.{rest}"
        out[new_key] = value
    return out


def load_torchvision_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> LoadReport:
    """Load a torchvision ResNet-family state dict into an excite model.

    Every key of the (converted) state dict must exist in ``model`` with the same shape,
    and every model key the state dict lacks must belong to an attention module;
    otherwise nothing is loaded and ``ValueError`` lists the offending keys.

    Args:
        model: an excite ResNet (``create_model("resnet50")``, ``"r3d_18"``, …), with
            or without attention.
        state_dict: ``torchvision.models.<name>(...).state_dict()`` or a checkpoint.

    Returns:
        :class:`LoadReport` with the loaded keys and the new (attention) keys.

    Raises:
        ValueError: unexpected keys, missing non-attention keys, or shape mismatches.
    """
    converted = convert_torchvision_state_dict(state_dict)
    own = model.state_dict()
    unexpected = sorted(k for k in converted if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    )
    missing = [k for k in own if k not in converted]
    not_attention = sorted(k for k in missing if ".attention." not in k)
    problems = []
    if unexpected:
        problems.append(f"keys not in the model: {unexpected[:8]}")
    if not_attention:
        problems.append(f"model keys missing from the checkpoint: {not_attention[:8]}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched[:8]}")
    if problems:
        raise ValueError(
            "state_dict does not fit this model (is it the same architecture and "
            "num_classes?); " + "; ".join(problems)
        )
    model.load_state_dict(converted, strict=False)
    return LoadReport(loaded=tuple(converted), new=tuple(missing))
