"""inflate: the I3D property (a clip of identical frames gives the 2D logits) for every
registered attention family, the inflation rule against its equation (float64), layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import excite
from excite.interop import attach_attention, inflate, inflate_weight
from excite.models import BasicBlock, Bottleneck, ResNet, create_model

from reference_nets import TVBasicBlock, TVBottleneck, TVResNet, randomise

FAMILIES = excite.list_attention()  # at test time: families registered later are covered

# families whose 3D form computes something else on a clip of identical frames, by their
# own definition (the inflated weights load, the logits differ): strict xfail, so a change
# that makes them inflate exactly is noticed
NOT_FRAME_CONSTANT = {
    "ela": "its 3D form adds a gate along time (one strip per axis)",
    "simam": "its variance divides by T*H*W - 1, not H*W - 1",
}
# families whose 3D form has weights the 2D one lacks (one more axis): inflate refuses
EXTRA_3D_WEIGHTS = {"coord", "strip", "triplet"}


def _model_2d(attention, **kwargs) -> ResNet:
    model = ResNet(BasicBlock, (1, 1), widths=(32, 32), stem_channels=32, stem_kernel_size=3,
                   stem_stride=1, num_classes=5, attention=attention, **kwargs)
    randomise(model)
    gen = torch.Generator().manual_seed(2)
    for p in model.parameters():  # attention parameters that start at 0 / 1 would hide errors
        if p.ndim <= 1:
            p.data.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _clip(x: torch.Tensor, frames: int) -> torch.Tensor:
    return x.unsqueeze(2).repeat(1, 1, frames, 1, 1)


def _close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    assert reference.std() > 0
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


def _marks(family: str):
    if family in NOT_FRAME_CONSTANT:
        return [pytest.mark.xfail(strict=True, reason=NOT_FRAME_CONSTANT[family])]
    return []


@pytest.mark.parametrize("family", [pytest.param(f, marks=_marks(f)) for f in FAMILIES])
def test_center_inflation_gives_the_2d_logits_on_identical_frames(family):
    model = _model_2d(family)
    if family in EXTRA_3D_WEIGHTS:
        with pytest.raises(ValueError, match="3D keys with no 2D weight"):
            inflate(model, method="center")
        return
    x = torch.randn(2, 3, 12, 12)
    model_3d = inflate(model, method="center")
    with torch.no_grad():
        _close(model_3d(_clip(x, 3)), model(x))


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in {*NOT_FRAME_CONSTANT, *EXTRA_3D_WEIGHTS}])
def test_mean_inflation_with_one_frame_kernels_gives_the_2d_logits(family):
    """time_kernel=1: zero padding along time reaches no frame, unless the family's own
    3D kernel spans frames (SAM's 7x7x7): then only "center" is exact (test above)."""
    model = _model_2d(family)
    model_3d = inflate(model, method="mean", time_kernel=1)
    spans = sorted({tuple(m.kernel_size) for m in model_3d.modules()
                    if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1})
    if spans:
        pytest.skip(f"{family}'s 3D kernels {spans} span frames; zero padding reaches every frame "
                    "through its global pooling")
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        _close(model_3d(_clip(x, 3)), model(x))


def test_mean_inflation_matches_2d_features_where_padding_does_not_reach():
    """t = 3 everywhere: the stem and four block convolutions each reach one frame further
    in, so frames 5 .. T-6 of the features are the 2D features exactly."""
    model = _model_2d(None)
    model_3d = inflate(model, method="mean", time_kernel=3)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        features = model_3d.forward_features(_clip(x, 12))
        expected = model.forward_features(x)
    assert features.shape[2] == 12  # nothing strides in time
    for frame in (5, 6):
        _close(features[:, :, frame], expected)
    assert not torch.allclose(features[:, :, 0], expected, atol=1e-4)  # the boundary differs


@pytest.mark.parametrize("method", ["mean", "center"])
@pytest.mark.parametrize("t", [1, 3, 5])
def test_inflated_kernel_is_the_i3d_equation(method, t):
    """conv3d(x, inflate(W)) at frame tau = sum_j w_j conv2d(x[tau + j - t//2], W), frames
    outside the clip being zero; w_j = 1/t ("mean") or [j == t//2] ("center"). float64."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 3, 6, 7, 7, generator=gen, dtype=torch.float64)
    out = F.conv3d(x, inflate_weight(weight, t, method=method), padding=(t // 2, 1, 1))
    for tau in range(6):
        expected = torch.zeros(2, 4, 7, 7, dtype=torch.float64)
        for j in range(t):
            source = tau + j - t // 2
            w = 1.0 / t if method == "mean" else float(j == t // 2)
            if 0 <= source < 6 and w:
                expected += w * F.conv2d(x[:, :, source], weight, padding=1)
        torch.testing.assert_close(out[:, :, tau], expected, rtol=1e-12, atol=1e-12)


def test_inflated_layout_and_per_layer_time_kernel():
    model_3d = inflate(create_model("resnet50", attention="cbam", widths=(8, 8, 8, 8), stem_channels=16,
                                    attention_kwargs={"reduction": 4}),
                       time_kernel={"stem": 5, "layer2": 1})
    assert model_3d.spatial_dims == 3
    assert model_3d.conv1.kernel_size == (5, 7, 7) and model_3d.conv1.stride == (1, 2, 2)
    assert model_3d.maxpool.kernel_size == (1, 3, 3) and model_3d.maxpool.stride == (1, 2, 2)
    assert model_3d.layer1[0].conv2.kernel_size == (3, 3, 3)
    assert model_3d.layer2[0].conv2.kernel_size == (1, 3, 3) and model_3d.layer2[0].conv2.stride == (1, 2, 2)
    assert model_3d.layer3[0].downsample[0].stride == (1, 2, 2)
    assert model_3d.layer1[0].conv1.kernel_size == (1, 1, 1)  # 1 x 1 stays pointwise
    assert model_3d.layer1[0].attention.spatial.conv.kernel_size == (7, 7, 7)  # the factory's 3D module
    # the inflated architecture is create_model's time_kernel layout
    twin = create_model("resnet50", attention="cbam", widths=(8, 8, 8, 8), stem_channels=16,
                        attention_kwargs={"reduction": 4}, spatial_dims=3, time_kernel={"stem": 5, "layer2": 1})
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in model_3d.state_dict().items()}


def test_inflate_keeps_the_2d_model_and_its_mode_and_dtype():
    model = _model_2d("se").double().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model_3d = inflate(model)
    assert model_3d.training and model_3d.fc.weight.dtype == torch.float64
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.spatial_dims == 2 and model_3d is not model


@pytest.mark.parametrize("block", [TVBasicBlock, TVBottleneck])
def test_torchvision_2d_resnet_inflates(block):
    ref = randomise(TVResNet(block, [1, 1, 1, 1], widths=(16, 16, 32, 32), stem=16, num_classes=7)).eval()
    model_3d = inflate(ref, method="center")
    assert isinstance(model_3d, ResNet) and model_3d.num_classes == 7
    assert isinstance(model_3d.layer1[0], Bottleneck if block is TVBottleneck else BasicBlock)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(model_3d(_clip(x, 3)), ref(x))


def test_inflate_refuses_what_it_cannot_inflate():
    with pytest.raises(TypeError, match="model_2d must be an nn.Module"):
        inflate("resnet18")
    with pytest.raises(ValueError, match="spatial_dims=3"):
        inflate(create_model("r3d_18", widths=(8, 8, 8, 8), stem_channels=8))
    with pytest.raises(ValueError, match="method must be one of"):
        inflate(_model_2d(None), method="repeat")
    with pytest.raises(ValueError, match="time_kernel must be odd"):
        inflate(_model_2d(None), time_kernel=2)
    with pytest.raises(ValueError, match="time_kernel keys"):
        inflate(_model_2d(None), time_kernel={"layer7": 3})
    attached = _model_2d(None)
    attach_attention(attached, "se")
    with pytest.raises(ValueError, match="inflate first, then attach"):
        inflate(attached)
    with pytest.raises(ValueError, match="torchvision"):
        inflate(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_real_torchvision_resnet_inflates():
    tv = pytest.importorskip("torchvision")
    ref = randomise(tv.models.resnet18(weights=None, num_classes=10)).eval()
    model_3d = inflate(ref, method="center")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _close(model_3d(_clip(x, 3)), ref(x))
