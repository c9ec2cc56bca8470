"""Every backbone trains one SGD step with each part-B family at its rank, and the
families sit where their papers put them (BAM once per stage, non-local after chosen
residual blocks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import excite
from excite.layers import BAM, GCT, SRM, MultiSpectralAttention, NonLocal, SelectiveKernel

FAMILIES = {
    "sk": SelectiveKernel,
    "bam": BAM,
    "gct": GCT,
    "fca": MultiSpectralAttention,
    "srm": SRM,
    "nonlocal": NonLocal,
}
# tiny configurations of every backbone kind: (model, rank, input); batch 2 because
# BatchNorm over pooled vectors (SK, BAM, SRM) needs two samples in training
BACKBONES = [
    ("tiny_resnet", 1, (2, 1, 64)),
    ("tiny_resnet", 2, (2, 1, 32, 32)),
    ("tiny_resnet", 3, (2, 1, 4, 32, 32)),
    ("resnet20", 2, (2, 3, 32, 32)),
    ("r3d_18", 3, (2, 3, 4, 32, 32)),
    ("x3d_xs", 3, (2, 3, 4, 32, 32)),
]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("model_name, rank, shape", BACKBONES,
                         ids=[f"{m}-{d}d" for m, d, _ in BACKBONES])
def test_backbone_trains_one_step(model_name: str, rank: int, shape, family: str) -> None:
    torch.manual_seed(0)
    model = excite.create_model(model_name, attention=family, num_classes=3, in_channels=shape[1],
                                spatial_dims=rank)
    modules = [m for m in model.modules() if isinstance(m, FAMILIES[family])]
    assert modules and model.attention_name == family
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = [p.detach().clone() for m in modules for p in m.parameters()]
    x, y = torch.randn(shape), torch.tensor([0, 2])
    # X3D zero-initialises each block's last BatchNorm, so a block's attention gets its
    # first gradient on the second step
    for _ in range(2 if model_name.startswith("x3d") and family != "bam" else 1):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    after = [p.detach() for m in modules for p in m.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), "attention weights did not move"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bam_sits_at_the_end_of_each_chosen_stage() -> None:
    """BAM's placement: once per stage (``layerS.attention``), not in the blocks. The
    paper's ResNet-50 uses stages 1-3, 25.92M parameters (Park et al. 2018, Table 4)."""
    with torch.device("meta"):
        model = excite.create_model("resnet50", attention="bam", attention_stages=(1, 2, 3))
    bams = [m for m in model.modules() if isinstance(m, BAM)]
    assert [b.channels for b in bams] == [256, 512, 1024]
    assert [isinstance(s.attention, BAM) for s in model.stages()[:3]] == [True] * 3
    assert not hasattr(model.layer4, "attention")
    assert all(isinstance(b.attention, nn.Identity) for s in model.stages() for b in s if hasattr(b, "conv1"))
    total = sum(p.numel() for p in model.parameters())
    assert total == 25_557_032 + sum(sum(p.numel() for p in b.parameters()) for b in bams)
    assert round(total / 1e4) == 2592


def test_non_local_after_chosen_blocks() -> None:
    """The paper's "10 non-local blocks in res3 and res4" of ResNet-50: excite stages 2 and
    3 (layer1 is res2), after the residual addition (``attention_position="post"``)."""
    with torch.device("meta"):
        model = excite.create_model("resnet50", attention="nonlocal", attention_stages=(2, 3),
                                    attention_position="post", num_classes=4)
    blocks = [m for m in model.modules() if isinstance(m, NonLocal)]
    assert len(blocks) == 10
    assert [b.channels for b in blocks] == [512] * 4 + [1024] * 6
    real = excite.create_model("tiny_resnet", attention="nonlocal", attention_position="post",
                               attention_stages=(2,), spatial_dims=3, in_channels=1, num_classes=2)
    # the paper's zero-initialised BatchNorm survives the model's own weight init
    (block,) = [m for m in real.modules() if isinstance(m, NonLocal)]
    assert torch.equal(block.norm.weight.detach(), torch.zeros(block.channels))
    assert real(torch.randn(2, 1, 4, 16, 16)).shape == (2, 2)
