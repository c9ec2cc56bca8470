"""Grad-CAM at 1D, 2D and 3D against a straightforward re-implementation."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import excite
from excite.viz import grad_cam, stage_modules

SHAPES = {1: (64,), 2: (64, 64), 3: (4, 64, 64)}  # the last stage keeps 2 positions (H, W)


def reference_grad_cam(model, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Selvaraju et al. 2017 written out on a ResNet's own pieces (no hooks)."""
    features = model.forward_features(x)  # A: the last stage's output (N, K, *s)
    features.retain_grad()
    logits = model.fc(torch.flatten(model.avgpool(features), 1))
    logits[torch.arange(x.shape[0]), classes].sum().backward()
    dims = tuple(range(2, features.ndim))
    alpha = features.grad.mean(dim=dims, keepdim=True)  # alpha_k^c: global-average gradients
    cam = torch.clamp((alpha * features).sum(dim=1, keepdim=True), min=0)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 2]
    cam = F.interpolate(cam.detach(), size=x.shape[2:], mode=mode, align_corners=False)
    peak = cam.flatten(1).max(dim=1).values
    return cam / torch.where(peak > 0, peak, torch.ones_like(peak)).reshape(-1, *[1] * (cam.ndim - 1))


@pytest.mark.parametrize("attention", [None, "cbam"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_grad_cam_matches_the_reference(rank: int, attention: str | None) -> None:
    torch.manual_seed(rank)
    model = excite.create_model("tiny_resnet", attention=attention, num_classes=4, in_channels=2,
                                spatial_dims=rank).double().eval()
    x = torch.randn(3, 2, *SHAPES[rank], dtype=torch.float64)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    cam = grad_cam(model, x)
    assert cam.shape == (3, 1, *SHAPES[rank]) and cam.dtype == torch.float32
    expected = reference_grad_cam(model, x, predicted)
    torch.testing.assert_close(cam, expected.float(), rtol=1e-5, atol=1e-6)
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1
    assert cam.flatten(1).amax(1).max() == 1.0  # at least one non-zero map, scaled to peak 1
    # an explicit class: the same computation for that class
    target = torch.tensor([3, 0, 1])
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(grad_cam(model, x, target=target),
                               reference_grad_cam(model, x, target).float(), rtol=1e-5, atol=1e-6)


def test_grad_cam_on_a_chosen_layer_and_on_x3d() -> None:
    model = excite.create_model("x3d_xs", num_classes=3).eval()
    assert [name for name, _ in stage_modules(model)] == ["stages.0", "stages.1", "stages.2", "stages.3"]
    x = torch.randn(2, 3, 4, 64, 64)
    cam = grad_cam(model, x, target=1)
    assert cam.shape == (2, 1, 4, 64, 64)
    resnet = excite.create_model("tiny_resnet", num_classes=3, in_channels=1, spatial_dims=2).eval()
    assert [name for name, _ in stage_modules(resnet)] == ["layer1", "layer2", "layer3", "layer4"]
    early = grad_cam(resnet, torch.randn(2, 1, 32, 32), layer="layer2")
    assert early.shape == (2, 1, 32, 32)


def test_grad_cam_restores_training_mode() -> None:
    model = excite.create_model("tiny_resnet", num_classes=3, in_channels=1, spatial_dims=1)
    model.train()
    grad_cam(model, torch.randn(2, 1, 64))
    assert model.training and all(m.training for m in model.modules())


def test_grad_cam_errors() -> None:
    model = excite.create_model("tiny_resnet", num_classes=3, in_channels=1, spatial_dims=1).eval()
    x = torch.randn(2, 1, 64)
    with pytest.raises(ValueError, match="layer 'layer9' is not a module"):
        grad_cam(model, x, layer="layer9")
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 3\)"):
        grad_cam(model, x, target=3)
    with pytest.raises(ValueError, match="one class or 2 classes"):
        grad_cam(model, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="1 to 3 spatial axes"):
        grad_cam(model, torch.randn(2, 1))
    with pytest.raises(ValueError, match="layer with spatial axes"):
        grad_cam(model, x, layer="fc")
