"""Parity with code people already use, loaded with identical weights (float32, 1e-6).

* The classic CBAM tutorial code (2D only): ChannelAttention / SpatialAttention return
  the map, and its CBAM block computes ``x = ca(x) * x; x = sa(x) * x``. Written out
  below as a plain reference: AdaptiveAvgPool2d / AdaptiveMaxPool2d, a shared MLP of
  1x1 convolutions, cat([mean, max]), a 7x7 conv, sigmoid.
* The authors' released CBAM code (the layout ``variant="official"`` reproduces):
  Flatten + Linear MLP with biases, [max, mean] maps, conv + BatchNorm(momentum 0.01).
* MONAI's ``ChannelSELayer`` for SE in 1D, 2D and 3D (skipped when MONAI is absent).
* timm's ``CbamModule`` (``variant="paper", norm=True, norm_momentum=0.1``) and
  ``CircularEfficientChannelAttn`` (``"ceca"``), 2D (skipped when timm is absent).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from excite.layers import (
    CBAM,
    ECA,
    ChannelAttention,
    SpatialAttention,
    SqueezeExcite,
    create_attention,
)

TOL = dict(atol=1e-6, rtol=1e-6)


# --- the tutorial reference (2D) -------------------------------------------------------


class TutorialChannelAttention(nn.Module):
    def __init__(self, in_planes: int, ratio: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(in_planes, in_planes // ratio, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(in_planes // ratio, in_planes, 1, bias=False),
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


class TutorialSpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        return self.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))


class TutorialCBAM(nn.Module):
    def __init__(self, planes: int, ratio: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.ca = TutorialChannelAttention(planes, ratio)
        self.sa = TutorialSpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ca(x) * x
        return self.sa(x) * x


def tutorial_cam_to_excite(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """1x1-conv MLP weights (out, in, 1, 1) -> Linear weights (out, in)."""
    return {
        "fc1.weight": sd[prefix + "fc.0.weight"].flatten(1),
        "fc2.weight": sd[prefix + "fc.2.weight"].flatten(1),
    }


def randomize(module: nn.Module) -> nn.Module:
    """N(0, 0.5) weights. (The tutorial/official parity tests keep PyTorch's default
    init instead: with weights this large, Linear vs 1x1-conv accumulation order alone
    moves the float32 output by a few 1e-6.)"""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


@pytest.mark.parametrize("ratio", [16, 4])
def test_tutorial_channel_attention(ratio: int) -> None:
    ref = TutorialChannelAttention(32, ratio)  # PyTorch's default (random) init
    ours = ChannelAttention(32, reduction=ratio)  # bias=False and pools avg+max by default
    ours.load_state_dict(tutorial_cam_to_excite(ref.state_dict()))
    x = torch.randn(4, 32, 24, 24)
    torch.testing.assert_close(ours.gate(x), ref(x), **TOL)  # tutorial returns the map
    torch.testing.assert_close(ours(x), ref(x) * x, **TOL)
    assert ours.gate(x).shape == (4, 32, 1, 1)


@pytest.mark.parametrize("kernel_size", [7, 3])
def test_tutorial_spatial_attention(kernel_size: int) -> None:
    ref = TutorialSpatialAttention(kernel_size)
    ours = SpatialAttention(spatial_dims=2, kernel_size=kernel_size)
    ours.load_state_dict({"conv.weight": ref.conv1.weight})  # same shape (1, 2, k, k)
    x = torch.randn(4, 32, 24, 24)
    torch.testing.assert_close(ours.gate(x), ref(x), **TOL)
    torch.testing.assert_close(ours(x), ref(x) * x, **TOL)
    assert ours.gate(x).shape == (4, 1, 24, 24)


def test_tutorial_cbam() -> None:
    ref = TutorialCBAM(64, ratio=16, kernel_size=7)
    ours = CBAM(64, spatial_dims=2, reduction=16, kernel_size=7)
    sd = ref.state_dict()
    ours.load_state_dict({
        **{f"channel.{k}": v for k, v in tutorial_cam_to_excite(sd, "ca.").items()},
        "spatial.conv.weight": sd["sa.conv1.weight"],
    })
    x = torch.randn(2, 64, 30, 30)
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


# --- the official code's layout (2D) ------------------------------------------------


class OfficialChannelGate(nn.Module):
    def __init__(self, gate_channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(gate_channels, gate_channels // reduction_ratio),
            nn.ReLU(),
            nn.Linear(gate_channels // reduction_ratio, gate_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.size(2), x.size(3))
        att = self.mlp(F.avg_pool2d(x, size, stride=size)) + self.mlp(F.max_pool2d(x, size, stride=size))
        return x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)


class OfficialSpatialGate(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compress = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), 1)
        return x * torch.sigmoid(self.bn(self.conv(compress)))


class OfficialCBAM(nn.Module):
    def __init__(self, gate_channels: int, reduction_ratio: int = 16) -> None:
        super().__init__()
        self.ChannelGate = OfficialChannelGate(gate_channels, reduction_ratio)
        self.SpatialGate = OfficialSpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


OFFICIAL_KEYS = {  # official name -> excite name
    "ChannelGate.mlp.1.weight": "channel.fc1.weight",
    "ChannelGate.mlp.1.bias": "channel.fc1.bias",
    "ChannelGate.mlp.3.weight": "channel.fc2.weight",
    "ChannelGate.mlp.3.bias": "channel.fc2.bias",
    "SpatialGate.conv.weight": "spatial.conv.weight",
    "SpatialGate.bn.weight": "spatial.norm.weight",
    "SpatialGate.bn.bias": "spatial.norm.bias",
    "SpatialGate.bn.running_mean": "spatial.norm.running_mean",
    "SpatialGate.bn.running_var": "spatial.norm.running_var",
    "SpatialGate.bn.num_batches_tracked": "spatial.norm.num_batches_tracked",
}


def test_official_cbam_checkpoint_loads_and_matches() -> None:
    ref = OfficialCBAM(64, 16)
    with torch.no_grad():
        ref.SpatialGate.bn.weight.fill_(1.3)
        ref.SpatialGate.bn.bias.fill_(-0.2)
        ref.SpatialGate.bn.running_mean.fill_(0.3)
        ref.SpatialGate.bn.running_var.fill_(2.0)
    ours = CBAM(64, spatial_dims=2, reduction=16, variant="official")
    sd = ref.state_dict()
    assert set(sd) == set(OFFICIAL_KEYS)  # every tensor of the checkpoint has a home
    ours.load_state_dict({OFFICIAL_KEYS[k]: v for k, v in sd.items()}, strict=True)
    x = torch.randn(2, 64, 20, 20)
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    ref.train(), ours.train()  # batch statistics, and the same running-stat update
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    torch.testing.assert_close(ours.spatial.norm.running_mean, ref.SpatialGate.bn.running_mean, **TOL)
    torch.testing.assert_close(ours.spatial.norm.running_var, ref.SpatialGate.bn.running_var, **TOL)


# --- MONAI ---------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("r", [2, 16])
def test_monai_channel_se(spatial_dims: int, r: int) -> None:
    blocks = pytest.importorskip("monai.networks.blocks")
    ref = randomize(blocks.ChannelSELayer(spatial_dims, 32, r=r))
    # MONAI: fc = Sequential(Linear(C, C // r), ReLU, Linear(C // r, C), Sigmoid)
    ours = SqueezeExcite(32, reduction=r)
    sd = ref.state_dict()
    ours.load_state_dict({
        "fc1.weight": sd["fc.0.weight"], "fc1.bias": sd["fc.0.bias"],
        "fc2.weight": sd["fc.2.weight"], "fc2.bias": sd["fc.2.bias"],
    })
    x = torch.randn(3, 32, *[7] * spatial_dims)
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


# --- timm ----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("build", ["padding_mode", "ceca"])
def test_timm_circular_eca(kernel_size: int, build: str) -> None:
    eca = pytest.importorskip("timm.layers.eca")
    ref = randomize(eca.CircularEfficientChannelAttn(kernel_size=kernel_size))  # channels=None
    if build == "ceca":
        ours = create_attention("ceca", 24, kernel_size=kernel_size)
    else:
        ours = ECA(24, kernel_size=kernel_size, padding_mode="circular")
    ours.load_state_dict(ref.state_dict())  # the same key: conv.weight (1, 1, k)
    x = torch.randn(3, 24, 7, 6)
    torch.testing.assert_close(ours(x), ref(x), **TOL)


TIMM_CBAM_KEYS = {  # timm name -> excite name
    "channel.fc1.weight": "channel.fc1.weight",
    "channel.fc2.weight": "channel.fc2.weight",
    "spatial.conv.conv.weight": "spatial.conv.weight",
    "spatial.conv.bn.weight": "spatial.norm.weight",
    "spatial.conv.bn.bias": "spatial.norm.bias",
    "spatial.conv.bn.running_mean": "spatial.norm.running_mean",
    "spatial.conv.bn.running_var": "spatial.norm.running_var",
    "spatial.conv.bn.num_batches_tracked": "spatial.norm.num_batches_tracked",
}


def test_timm_cbam() -> None:
    cbam = pytest.importorskip("timm.layers.cbam")
    ref = cbam.CbamModule(64)  # rd_ratio 1/16, 7x7, no MLP bias, BatchNorm momentum 0.1
    ours = CBAM(64, spatial_dims=2, reduction=16, variant="paper", norm=True, norm_momentum=0.1)
    ours.reset_parameters()
    for name, p in ref.state_dict().items():  # timm's fresh BatchNorm: gamma 1, beta 0
        if name.startswith("spatial.conv.bn.") and p.is_floating_point():
            torch.testing.assert_close(ours.state_dict()[TIMM_CBAM_KEYS[name]], p)
    with torch.no_grad():
        ref.spatial.conv.bn.weight.fill_(1.3)
        ref.spatial.conv.bn.bias.fill_(-0.2)
        ref.spatial.conv.bn.running_mean.fill_(0.3)
        ref.spatial.conv.bn.running_var.fill_(2.0)
    sd = ref.state_dict()
    assert set(sd) == set(TIMM_CBAM_KEYS)
    ours.load_state_dict(
        {TIMM_CBAM_KEYS[k]: v.flatten(1) if k.startswith("channel.") else v for k, v in sd.items()}
    )
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, 64, 12, 12)
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    ref.train(), ours.train()  # batch statistics, and the same momentum-0.1 update
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    torch.testing.assert_close(ours.spatial.norm.running_mean, ref.spatial.conv.bn.running_mean, **TOL)
    torch.testing.assert_close(ours.spatial.norm.running_var, ref.spatial.conv.bn.running_var, **TOL)
