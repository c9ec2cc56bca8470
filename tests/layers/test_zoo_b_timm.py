"""timm parity for the two part-B families timm has: ``SelectiveKernel`` ("sk") and
``NonLocalAttn`` ("nl").

Always: a module with timm's parameter names and shapes, its forward re-implemented here
from timm's description (functional ops), loads into the excite configuration through
the key mapping and gives the same output. Where timm is installed: the same against
timm's own classes.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from excite.layers import NonLocal, SelectiveKernel
from excite.layers.non_local import non_local_from_timm
from excite.layers.selective_kernel import selective_kernel_from_timm

C = 32


def timm_make_divisible(v: float, divisor: int = 8) -> int:
    """timm's channel rounding (``timm.layers.make_divisible``), written out."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return module


def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


# --- selective kernel ------------------------------------------------------------------


class TimmLayoutSK(nn.Module):
    """timm's ``SelectiveKernel(C)`` defaults: kernels [3, 5] kept 3x3 with dilations 1, 2;
    the input split across the two paths; attention width make_divisible(C / 16, 8)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        attn = timm_make_divisible(channels / 16)
        self.paths = nn.ModuleList()
        for dilation in (1, 2):
            path = nn.Module()
            path.conv = nn.Conv2d(channels // 2, channels, 3, padding=dilation, dilation=dilation, bias=False)
            path.bn = nn.BatchNorm2d(channels)
            self.paths.append(path)
        self.attn = nn.Module()
        self.attn.fc_reduce = nn.Conv2d(channels, attn, 1, bias=False)
        self.attn.bn = nn.BatchNorm2d(attn)
        self.attn.fc_select = nn.Conv2d(attn, channels * 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # eval mode
        parts = torch.split(x, x.shape[1] // 2, 1)
        paths = []
        for i, (path, part) in enumerate(zip(self.paths, parts)):
            y = F.conv2d(part, path.conv.weight, padding=i + 1, dilation=i + 1)
            paths.append(F.relu(bn(y, path.bn)))
        stacked = torch.stack(paths, 1)  # (B, 2, C, H, W)
        a = stacked.sum(1).mean((2, 3), keepdim=True)
        a = F.relu(bn(F.conv2d(a, self.attn.fc_reduce.weight), self.attn.bn))
        a = F.conv2d(a, self.attn.fc_select.weight)
        a = torch.softmax(a.view(a.shape[0], 2, -1, 1, 1), dim=1)
        return (stacked * a).sum(1)


def excite_timm_sk(channels: int) -> SelectiveKernel:
    return SelectiveKernel(channels, spatial_dims=2, kernel_sizes=(3, 5), split_input=True,
                           reduction=16, divisor=8, min_hidden=1)


def test_sk_key_mapping_matches_timm_layout() -> None:
    reference = randomize(TimmLayoutSK(C)).eval()
    m = excite_timm_sk(C)
    m.load_state_dict(selective_kernel_from_timm(reference.state_dict()))  # strict: every key
    m.eval()
    x = torch.randn(2, C, 9, 8)
    torch.testing.assert_close(m(x), reference(x), atol=1e-5, rtol=1e-5)


def test_sk_mapping_rejects_foreign_keys() -> None:
    with pytest.raises(ValueError, match=r"'attn.fc.weight'.*SelectiveKernel"):
        selective_kernel_from_timm({"attn.fc.weight": torch.zeros(1)})


@pytest.mark.parametrize("train", [False, True])
def test_sk_matches_timm(train: bool) -> None:
    timm = pytest.importorskip("timm")
    reference = randomize(timm.layers.SelectiveKernel(C))
    m = excite_timm_sk(C)
    m.load_state_dict(selective_kernel_from_timm(reference.state_dict()))
    reference.train(train)
    m.train(train)
    x = torch.randn(3, C, 8, 8)
    torch.testing.assert_close(m(x), reference(x), atol=1e-5, rtol=1e-5)


# --- non-local -------------------------------------------------------------------------


class TimmLayoutNonLocal(nn.Module):
    """timm's ``NonLocalAttn(C)``: t, p, g, z 1x1 convolutions with biases to
    make_divisible(C / 8, 8) channels, softmax of t^T p scaled by C^(-1/2), BN after z."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        rd = timm_make_divisible(channels / 8)
        self.t = nn.Conv2d(channels, rd, 1)
        self.p = nn.Conv2d(channels, rd, 1)
        self.g = nn.Conv2d(channels, rd, 1)
        self.z = nn.Conv2d(rd, channels, 1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # eval mode
        b, c, h, w = x.shape
        t = F.conv2d(x, self.t.weight, self.t.bias).flatten(2).transpose(1, 2)  # (B, HW, rd)
        p = F.conv2d(x, self.p.weight, self.p.bias).flatten(2)  # (B, rd, HW)
        g = F.conv2d(x, self.g.weight, self.g.bias).flatten(2).transpose(1, 2)
        att = torch.softmax(torch.bmm(t, p) * c ** -0.5, dim=2)
        y = torch.bmm(att, g).transpose(1, 2).reshape(b, -1, h, w)
        return bn(F.conv2d(y, self.z.weight, self.z.bias), self.norm) + x


def excite_timm_non_local(channels: int) -> NonLocal:
    return NonLocal(channels, spatial_dims=2, reduction=8, divisor=8, scale="channels")


def test_non_local_key_mapping_matches_timm_layout() -> None:
    reference = randomize(TimmLayoutNonLocal(C)).eval()
    m = excite_timm_non_local(C)
    assert m.inner_channels == timm_make_divisible(C / 8) and m.scale == pytest.approx(1 / math.sqrt(C))
    m.load_state_dict(non_local_from_timm(reference.state_dict()))
    m.eval()
    x = torch.randn(2, C, 5, 7)
    torch.testing.assert_close(m(x), reference(x), atol=1e-5, rtol=1e-5)


def test_non_local_mapping_rejects_foreign_keys() -> None:
    with pytest.raises(ValueError, match=r"'theta.weight'.*NonLocalAttn"):
        non_local_from_timm({"theta.weight": torch.zeros(1)})


@pytest.mark.parametrize("train", [False, True])
def test_non_local_matches_timm(train: bool) -> None:
    timm = pytest.importorskip("timm")
    reference = randomize(timm.layers.NonLocalAttn(C))
    m = excite_timm_non_local(C)
    m.load_state_dict(non_local_from_timm(reference.state_dict()))
    reference.train(train)
    m.train(train)
    x = torch.randn(3, C, 6, 5)
    torch.testing.assert_close(m(x), reference(x), atol=1e-5, rtol=1e-5)


# --- whole timm ResNets with attn_layer="nl": excite.convert_state_dict(source="timm") --

NL_TIMM = {"reduction": 8, "divisor": 8, "scale": "channels"}


def test_convert_state_dict_maps_timm_non_local_blocks() -> None:
    """A ResNet-18 state dict in timm's layout (the attention slot is ``se``, the
    non-local names t/p/g/z/norm; written from excite's by renaming) converts back and
    loads strictly."""
    import excite

    model = randomize(excite.create_model("resnet18", attention="nonlocal", attention_kwargs=NL_TIMM,
                                          num_classes=5)).eval()
    timm_names = {"theta": "t", "phi": "p", "g": "g", "w_z": "z", "norm": "norm"}
    timm_state = {}
    for key, value in model.state_dict().items():
        head, sep, tail = key.partition(".attention.")
        if sep:
            name, rest = tail.split(".", 1)
            timm_state[f"{head}.se.{timm_names[name]}.{rest}"] = value
        else:
            timm_state[key] = value
    assert any(".se.t.weight" in k for k in timm_state)
    again = excite.create_model("resnet18", attention="nonlocal", attention_kwargs=NL_TIMM, num_classes=5)
    again.load_state_dict(excite.convert_state_dict(timm_state, source="timm"))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again.eval()(x), model(x))


def test_timm_resnet_with_non_local_matches_excite() -> None:
    timm = pytest.importorskip("timm")
    import excite

    reference = timm.models.resnet.ResNet(
        timm.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=5, block_args={"attn_layer": "nl"})
    for i, block in enumerate(b for s in (reference.layer1, reference.layer2, reference.layer3,
                                          reference.layer4) for b in s):
        randomize(block.se, seed=i)  # timm zero-initialises the block's BN: make it count
    reference.eval()
    model = excite.create_model("resnet18", attention="nonlocal", attention_kwargs=NL_TIMM, num_classes=5)
    model.load_state_dict(excite.convert_state_dict(reference.state_dict(), source="timm"))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), reference(x), atol=1e-4, rtol=1e-4)
