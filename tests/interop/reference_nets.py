"""Hand-written stand-ins for other codebases' networks, for tests that need neither
torchvision, timm, pytorchvideo nor the official CBAM code installed.

Each class reproduces its source's module tree (attribute names, so its state-dict keys)
and its forward, written from the source's layout with plain ``torch.nn`` layers, not
with excite's modules: torchvision's ``models/resnet.py`` and ``models/video/resnet.py``,
timm's ``models/resnet.py`` with ``layers/squeeze_excite.py`` / ``eca.py`` / ``cbam.py``,
the CBAM authors' ``MODELS/model_resnet.py`` / ``cbam.py`` and pytorchvideo's
``models/x3d.py`` (with fvcore's ``SqueezeExcitation``). Widths are parameters so the
tests stay small; the official code and timm fix them at 64 … 512.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def randomise(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (else BN is nearly identity)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
    return model


# ----------------------------------------------------------------------- torchvision 2D


class TVBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TVBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TVResNet(nn.Module):
    """torchvision.models.ResNet's tree and forward."""

    def __init__(self, block: type[nn.Module], layers: list[int], *, widths=(64, 128, 256, 512),
                 stem: int = 64, num_classes: int = 10, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (n, w) in enumerate(zip(layers, widths), start=1):
            blocks = []
            for b in range(n):
                stride = 2 if (b == 0 and i > 1) else 1
                down = None
                if stride != 1 or self.inplanes != w * block.expansion:
                    down = nn.Sequential(nn.Conv2d(self.inplanes, w * block.expansion, 1, stride, bias=False),
                                         nn.BatchNorm2d(w * block.expansion))
                blocks.append(block(self.inplanes, w, stride, down, groups, base_width))
                self.inplanes = w * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ----------------------------------------------------------------------- torchvision video


class TVConv2Plus1D(nn.Sequential):
    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
        )


class TVVideoBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, conv, stride: int = 1, downsample=None) -> None:
        super().__init__()
        mid = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)
        self.conv1 = nn.Sequential(conv(inplanes, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.conv2(self.conv1(x))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


def tv_conv3d(cin: int, cout: int, mid: int, stride: int = 1) -> nn.Module:
    return nn.Conv3d(cin, cout, 3, stride, 1, bias=False)


class TVVideoResNet(nn.Module):
    """torchvision.models.video.VideoResNet's tree and forward (r3d or r(2+1)d)."""

    def __init__(self, *, kind: str = "r3d", widths=(64, 128, 256, 512), num_classes: int = 10) -> None:
        super().__init__()
        stem = widths[0]
        if kind == "r3d":
            conv = tv_conv3d
            self.stem = nn.Sequential(nn.Conv3d(3, stem, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                                      nn.BatchNorm3d(stem), nn.ReLU(inplace=True))
        else:
            conv = TVConv2Plus1D
            self.stem = nn.Sequential(
                nn.Conv3d(3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), nn.BatchNorm3d(45),
                nn.ReLU(inplace=True),
                nn.Conv3d(45, stem, (3, 1, 1), 1, (1, 0, 0), bias=False), nn.BatchNorm3d(stem),
                nn.ReLU(inplace=True))
        inplanes = stem
        for i, w in enumerate(widths, start=1):
            blocks = []
            for b in range(2):
                stride = 2 if (b == 0 and i > 1) else 1
                down = None
                if stride != 1 or inplanes != w:
                    down = nn.Sequential(nn.Conv3d(inplanes, w, 1, stride, bias=False), nn.BatchNorm3d(w))
                blocks.append(TVVideoBasicBlock(inplanes, w, conv, stride, down))
                inplanes = w
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ----------------------------------------------------------------------- timm


def timm_divisible(v: float, divisor: int) -> int:
    """timm's make_divisible(v, divisor, round_limit=0.)."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class TimmSE(nn.Module):
    """timm.layers.SEModule: 1x1 convs with bias, hidden make_divisible(C/16, 8)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        rd = timm_divisible(channels / 16, 8)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.bn(self.fc1(s)))))


class TimmECA(nn.Module):
    """timm.layers.EcaModule: k = max(odd(|log2 C + 1| / 2), 3), Conv1d without bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        t = int(abs(math.log(channels, 2) + 1) / 2)
        k = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.gate(self.conv(y)).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


class _TimmConvNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1)  # momentum 0.1, eps 1e-5


class _TimmChannelAttn(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        rd = max(1, int(channels / 16 + 0.5))
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        m = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * torch.sigmoid(a + m)


class _TimmSpatialAttn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _TimmConvNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv.bn(self.conv.conv(maps)))


class TimmCBAM(nn.Module):
    """timm.layers.CbamModule."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel = _TimmChannelAttn(channels)
        self.spatial = _TimmSpatialAttn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class TimmBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, attn=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.drop_block = nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.aa = nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = attn(planes) if attn else None
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.drop_path = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act2(x)


class TimmBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, attn=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop_block = nn.Identity()
        self.act2 = nn.ReLU(inplace=True)
        self.aa = nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.se = attn(planes * 4) if attn else None
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.drop_path = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act3(x)


class TimmResNet(nn.Module):
    """timm.models.resnet.ResNet: stem_type '' or 'deep', avg_down, block_args attn_layer."""

    def __init__(self, block, layers, *, widths=(64, 128, 256, 512), stem_width: int = 64,
                 deep_stem: bool = False, avg_down: bool = False, attn=None, num_classes: int = 10) -> None:
        super().__init__()
        inplanes = stem_width * 2 if deep_stem else stem_width
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, stem_width, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, inplanes, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (n, planes) in enumerate(zip(layers, widths), start=1):
            stride = 1 if i == 1 else 2
            out = planes * block.expansion
            down = None
            if stride != 1 or inplanes != out:
                if avg_down:
                    pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 \
                        else nn.Identity()
                    down = nn.Sequential(pool, nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out))
                else:
                    down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            blocks = []
            for b in range(n):
                blocks.append(block(inplanes, planes, stride if b == 0 else 1, down if b == 0 else None, attn))
                inplanes = out
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.global_pool(x))


# ----------------------------------------------------------------------- official CBAM


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class OfficialChannelGate(nn.Module):
    def __init__(self, c: int, r: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(_Flatten(), nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.size(2), x.size(3))
        att = self.mlp(F.avg_pool2d(x, size, stride=size)) + self.mlp(F.max_pool2d(x, size, stride=size))
        return x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)


class _OfficialBasicConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, 1, 3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class OfficialSpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = _OfficialBasicConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compress = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), 1)
        return x * torch.sigmoid(self.spatial(compress))


class OfficialCBAM(nn.Module):
    def __init__(self, c: int, r: int = 16) -> None:
        super().__init__()
        self.ChannelGate = OfficialChannelGate(c, r)
        self.SpatialGate = OfficialSpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class OfficialBasicBlock(TVBasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        self.cbam = OfficialCBAM(planes, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out = self.cbam(out)
        out += residual
        return self.relu(out)


class OfficialBottleneck(TVBottleneck):
    def __init__(self, inplanes, planes, stride=1, downsample=None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        self.cbam = OfficialCBAM(planes * 4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))  # stride in the 3x3, as torchvision
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out = self.cbam(out)
        out += residual
        return self.relu(out)


class OfficialResidualNet(nn.Module):
    """The CBAM authors' ResidualNet(network_type, depth, num_classes, 'CBAM')."""

    def __init__(self, network_type: str, block, layers, *, widths=(64, 128, 256, 512),
                 stem: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.network_type = network_type
        self.inplanes = stem
        if network_type == "ImageNet":
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        for i, (n, w) in enumerate(zip(layers, widths), start=1):
            stride = 1 if i == 1 else 2
            down = None
            if stride != 1 or self.inplanes != w * block.expansion:
                down = nn.Sequential(nn.Conv2d(self.inplanes, w * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(w * block.expansion))
            blocks = [block(self.inplanes, w, stride, down)]
            self.inplanes = w * block.expansion
            blocks += [block(self.inplanes, w) for _ in range(1, n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.network_type == "ImageNet":
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # the official head: AvgPool2d(7) at 224 (ImageNet), avg_pool2d(x, 4) at 32 (CIFAR):
        # the global average at the sizes it was built for
        x = F.avg_pool2d(x, x.shape[2:])
        return self.fc(x.view(x.size(0), -1))


OFFICIAL_DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
                   50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}


def official_resnet(network_type: str, depth: int, **kwargs) -> OfficialResidualNet:
    kind, layers = OFFICIAL_DEPTHS[depth]
    block = OfficialBasicBlock if kind == "basic" else OfficialBottleneck
    return OfficialResidualNet(network_type, block, layers, **kwargs)


# ----------------------------------------------------------------------- pytorchvideo X3D


def pv_round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """pytorchvideo.layers.utils.round_width (ceil=False)."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


class FvcoreSE(nn.Module):
    """fvcore.nn.squeeze_excitation.SqueezeExcitation(is_3d=True)."""

    def __init__(self, c: int, reduced: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv3d(c, reduced, 1, bias=True), nn.ReLU(),
                                   nn.Conv3d(reduced, c, 1, bias=True), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.block(x.mean(dim=[2, 3, 4], keepdim=True))


class _Conv2plus1d(nn.Module):
    def __init__(self, conv_t: nn.Module, conv_xy: nn.Module) -> None:
        super().__init__()
        self.conv_t = conv_t
        self.conv_xy = conv_xy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_xy(self.conv_t(x))


class _Stem(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # pytorchvideo passes its spatial conv as conv_t and its temporal one as conv_xy
        self.conv = _Conv2plus1d(nn.Conv3d(cin, cout, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
                                 nn.Conv3d(cout, cout, (5, 1, 1), 1, (2, 0, 0), bias=False, groups=cout))
        self.norm = nn.BatchNorm3d(cout)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, inner: int, cout: int, stride: int, se: bool) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(cin, inner, 1, bias=False)
        self.norm_a = nn.BatchNorm3d(inner)
        self.act_a = nn.ReLU()
        self.conv_b = nn.Conv3d(inner, inner, 3, (1, stride, stride), 1, groups=inner, bias=False)
        self.norm_b = nn.Sequential(nn.BatchNorm3d(inner),
                                    FvcoreSE(inner, pv_round_width(inner, 0.0625)) if se else nn.Identity())
        self.act_b = nn.SiLU()  # pytorchvideo's Swish: x * sigmoid(x)
        self.conv_c = nn.Conv3d(inner, cout, 1, bias=False)
        self.norm_c = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_a(self.norm_a(self.conv_a(x)))
        x = self.act_b(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, inner: int, cout: int, stride: int, se: bool) -> None:
        super().__init__()
        self.branch1_conv = (nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False)
                             if cin != cout or stride > 1 else None)
        self.branch1_norm = nn.BatchNorm3d(cout) if cin != cout else None
        self.branch2 = _Bottleneck(cin, inner, cout, stride, se)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.branch1_conv is not None:
            shortcut = self.branch1_conv(x)
            if self.branch1_norm is not None:
                shortcut = self.branch1_norm(shortcut)
        return self.activation(shortcut + self.branch2(x))


class _ResStage(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class _ProjectedPool(nn.Module):
    def __init__(self, cin: int, inner: int, cout: int) -> None:
        super().__init__()
        self.pre_conv = nn.Conv3d(cin, inner, 1, bias=False)
        self.pre_norm = nn.BatchNorm3d(inner)
        self.pre_act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1)  # AvgPool3d over the whole clip at the design size
        self.post_conv = nn.Conv3d(inner, cout, 1, bias=False)
        self.post_act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.pre_act(self.pre_norm(self.pre_conv(x))))
        return self.post_act(self.post_conv(x))


class _Head(nn.Module):
    def __init__(self, cin: int, inner: int, cout: int, classes: int) -> None:
        super().__init__()
        self.pool = _ProjectedPool(cin, inner, cout)
        self.dropout = nn.Dropout(0.5)
        self.proj = nn.Linear(cout, classes)
        self.activation = nn.Softmax(dim=1)
        self.output_pool = nn.AdaptiveAvgPool3d(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.pool(x))
        x = self.proj(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        return self.output_pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.pool(x))
        x = self.activation(self.proj(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3))
        return self.output_pool(x).flatten(1)


class PytorchvideoX3D(nn.Module):
    """pytorchvideo.models.x3d.create_x3d's Net (blocks: stem, 4 stages, head)."""

    def __init__(self, *, depth_factor: float = 2.2, num_classes: int = 400) -> None:
        super().__init__()
        stem_out = pv_round_width(12, 2.0)
        dims = [12]
        for _ in range(3):
            dims.append(pv_round_width(dims[-1], 2.0))
        blocks: list[nn.Module] = [_Stem(3, stem_out)]
        cin = stem_out
        for dim, depth in zip(dims, (1, 2, 5, 3)):
            cout = pv_round_width(dim, 2.0)
            inner = int(2.25 * cout)
            n = int(math.ceil(depth_factor * depth))
            blocks.append(_ResStage([
                _ResBlock(cin if b == 0 else cout, inner, cout, 2 if b == 0 else 1, se=(b + 1) % 2 == 1)
                for b in range(n)
            ]))
            cin = cout
        blocks.append(_Head(cin, inner, 2048, num_classes))
        self.blocks = nn.ModuleList(blocks)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output before its softmax."""
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1].logits(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x
