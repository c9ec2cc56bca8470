"""The textbook SE and CBAM, written the way the classic tutorials write them.

Two MLP passes (one per pooled descriptor), separate pooling passes, ``amax`` for the
max pools, ``torch.cat`` of the channel-pooled maps and a plain convolution; autograd
differentiates everything. These are the baselines the fused path is measured against
(rank generic so one class serves 2D and 3D shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextbookSE(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = x.mean(tuple(range(2, x.ndim)))
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y))))
        return x * y.view(n, c, *([1] * (x.ndim - 2)))


class TextbookCBAM(nn.Module):
    def __init__(self, channels: int, spatial_dims: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels, bias=False),
        )
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial_dims - 1]
        self.conv = conv(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        axes = tuple(range(2, x.ndim))
        avg = self.mlp(x.mean(axes))
        mx = self.mlp(x.amax(axes))
        x = x * torch.sigmoid(avg + mx).view(n, c, *([1] * (x.ndim - 2)))
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))
