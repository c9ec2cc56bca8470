"""Small in-test datasets and models for the engine tests (no registry needed)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from excite.data import DatasetInfo
from excite.engine import Splits


class BlobDataset(Dataset):
    """Class c = a bright square in quadrant c of a noisy 1x8x8 image (learnable fast)."""

    def __init__(self, n: int, num_classes: int = 4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % num_classes
        self.x = 0.5 * torch.randn(n, 1, 8, 8, generator=gen)
        for i, c in enumerate(self.y.tolist()):
            r, q = divmod(c % 4, 2)
            self.x[i, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 1.0 + c // 4

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def blob_splits(n_train: int = 64, n_val: int = 32, num_classes: int = 4) -> Splits:
    info = DatasetInfo("blobs", num_classes, 1, 2, (1, 8, 8),
                       tuple(f"c{i}" for i in range(num_classes)), "test data")
    return Splits(BlobDataset(n_train, num_classes, 0), BlobDataset(n_val, num_classes, 1), info)


class TinyNet(nn.Module):
    """conv3x3 -> (optional BN) -> ReLU -> dropout -> 2x2 average pool -> flatten -> linear."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, norm: bool = True,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.spatial_dims = 2
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.norm(self.conv(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))
