"""Rank-generic backbones with an attention switch, and their registry.

``create_model(name, attention=..., num_classes=...)`` builds any registered model;
``list_models()`` lists them. See docs/models.md for the table of models.
"""

from __future__ import annotations

from excite.models.registry import ModelInfo, create_model, list_models, model_info, register_model
from excite.models.resnet import BasicBlock, Bottleneck, ConvNd, PadShortcut, ResNet
from excite.models.video import (
    Conv2Plus1D,
    Conv3DInflated,
    Conv3DNoTemporal,
    mc3_18,
    r2plus1d_18,
    r3d_18,
)
from excite.models.weights import LoadReport, load_torchvision_state_dict
from excite.models.x3d import X3D, x3d

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "Conv2Plus1D",
    "Conv3DInflated",
    "Conv3DNoTemporal",
    "ConvNd",
    "LoadReport",
    "ModelInfo",
    "PadShortcut",
    "ResNet",
    "X3D",
    "create_model",
    "list_models",
    "load_torchvision_state_dict",
    "mc3_18",
    "model_info",
    "r2plus1d_18",
    "r3d_18",
    "register_model",
    "x3d",
]
