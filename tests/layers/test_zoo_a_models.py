"""Every backbone trains one SGD step with each zoo part A family at its rank.

Tiny configurations: tiny_resnet at 1D/2D/3D, resnet20 (2D), r3d_18 on a 2 x 3 x 4 x 32 x 32
clip and x3d_xs on a 2 x 3 x 4 x 32 x 32 clip. The batch holds two samples because strip
pooling's per-strip BatchNorm (as in the paper) needs more than one value per channel in
training, and a late stage's strips can be one position long.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import excite

FAMILIES = ["coord", "ela", "ese", "gc", "ge", "simam", "strip", "triplet"]
BACKBONES = [  # (model, spatial_dims, input shape)
    ("tiny_resnet", 1, (2, 1, 64)),
    ("tiny_resnet", 2, (2, 1, 32, 32)),
    ("tiny_resnet", 3, (2, 1, 4, 32, 32)),
    ("resnet20", 2, (2, 3, 32, 32)),
    ("r3d_18", 3, (2, 3, 4, 32, 32)),
    ("x3d_xs", 3, (2, 3, 4, 32, 32)),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_backbone_trains_a_step(family: str) -> None:
    for name, spatial_dims, shape in BACKBONES:
        torch.manual_seed(0)
        model = excite.create_model(name, attention=family, num_classes=3, in_channels=shape[1],
                                    spatial_dims=spatial_dims)
        attention = [m for m in model.modules() if type(m) is excite.layers.attention_factory(family).builder]
        assert attention, f"{name}: no {family} module"
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(shape), torch.tensor([0, 2])
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{name}: no gradient for {missing[:4]}"
        optimizer.step()
        assert torch.isfinite(loss), name
        assert all(torch.isfinite(p).all() for p in model.parameters()), name
        changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
        assert changed, name
        attention_params = [p for m in attention for p in m.parameters()]
        # SimAM and GE's default gather have no parameters; X3D zero-initialises the last
        # BatchNorm of every block, so nothing before it gets a gradient at the first step
        if attention_params and not name.startswith("x3d"):
            assert any(p.grad.abs().sum() > 0 for p in attention_params), name
