"""Users' own models and weights: attach attention, inflate 2D to 3D, convert checkpoints.

- :func:`attach_attention`: attention before the identity addition of every residual
  block of a torchvision / timm / excite ResNet (or after modules you name), in place,
  keeping every existing weight; ``init="identity"`` starts it as the identity.
- :func:`inflate`: a 2D ResNet (excite or torchvision, any attention) as its I3D 3D twin.
- :func:`convert_state_dict`: the official CBAM code's, timm's, torchvision's and
  pytorchvideo's checkpoints in excite's names; :func:`load_weights_into` fills a model
  from a file (safetensors or ``torch.load(weights_only=True)``), all or nothing.

See docs/interop.md for the workflows end to end.
"""

from __future__ import annotations

from .attach import AttachReport, Insertion, attach_attention, find_residual_blocks
from .convert import (
    SOURCES,
    WeightsReport,
    convert_state_dict,
    load_checkpoint,
    load_weights_into,
    unwrap_checkpoint,
)
from .inflate import METHODS, inflate, inflate_state_dict, inflate_weight, resnet_from_torchvision

__all__ = [
    "METHODS",
    "SOURCES",
    "AttachReport",
    "Insertion",
    "WeightsReport",
    "attach_attention",
    "convert_state_dict",
    "find_residual_blocks",
    "inflate",
    "inflate_state_dict",
    "inflate_weight",
    "load_checkpoint",
    "load_weights_into",
    "resnet_from_torchvision",
    "unwrap_checkpoint",
]
