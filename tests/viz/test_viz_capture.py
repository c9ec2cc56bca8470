"""excite.capture_attention: every family's gates by module name, outputs untouched."""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict

import pytest
import torch
from torch import nn

import excite
from excite import kernels
from excite.capture import AttentionMaps, attention_modules

C, S, N = 16, 6, 2
# families whose forward is x * gate(x) (per-axis gates: x * prod(gates))
MULTIPLICATIVE = {"se", "cam", "eca", "ceca", "ese", "fca", "gct", "ge", "sam", "simam", "srm",
                  "strip", "coord", "ela"}


def _net(name: str, rank: int) -> nn.Sequential:
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
    attention = excite.create_attention(name, C, spatial_dims=rank)
    return nn.Sequential(OrderedDict(stem=conv(3, C, 3, padding=1), attention=attention)).eval()


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _channel(g: torch.Tensor) -> torch.Tensor:
    """(N, C, 1, ..., 1) -> (N, C)."""
    return g.reshape(g.shape[0], g.shape[1])


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("name", excite.list_attention())
def test_capture_records_every_family_at_every_rank(name: str, rank: int) -> None:
    net = _net(name, rank)
    x = torch.randn(N, 3, *([S] * rank))
    with torch.no_grad():
        expected_out = net(x)
        h = net.stem(x)  # what the attention module sees
    maps, out = capture_and_run(net, x)
    assert torch.equal(out, expected_out)  # the forward pass is untouched
    assert _no_hooks(net)
    module = net.attention
    if not hasattr(type(module), "gate"):
        assert maps.ungated == ("attention",) and dict(maps) == {}
        return
    with torch.no_grad():
        if name in ("cbam", "scse"):
            mc = module.channel.gate(h)
            assert sorted(maps) == ["attention.channel", "attention.spatial"]
            assert maps["attention.channel"].shape == (N, C)
            assert maps["attention.spatial"].shape == (N, 1, *([S] * rank))
            torch.testing.assert_close(maps["attention.channel"], _channel(mc))
            ms = maps["attention.spatial"]
            # the paper's equations rebuild the output from the recorded maps:
            # CBAM F'' = M_s(F') ⊙ F' with F' = M_c(F) ⊙ F; scSE x ⊙ cSE + x ⊙ sSE
            rebuilt = h * mc * ms if name == "cbam" else h * mc + h * ms
            torch.testing.assert_close(rebuilt, out, rtol=1e-5, atol=1e-6)
            return
        gate = module.gate(h)
    assert list(maps) == ["attention"]
    got = maps["attention"]
    if isinstance(gate, tuple):
        assert isinstance(got, tuple) and len(got) == len(gate)
        for g, w in zip(got, gate):
            assert g.shape == w.shape and g.shape[0] == N
            torch.testing.assert_close(g, w.float())
        full = functools.reduce(torch.mul, got)
    else:
        assert got.shape[0] == N
        if gate.ndim == rank + 2 and all(s == 1 for s in gate.shape[2:]):
            assert got.shape == (N, C)  # a channel gate
            torch.testing.assert_close(got, _channel(gate).float())
            full = gate
        else:
            assert got.shape == gate.shape
            torch.testing.assert_close(got, gate.float())
            full = got
        if gate.ndim == rank + 2 and gate.shape[1] == 1:
            assert got.shape == (N, 1, *([S] * rank))  # a spatial map
    if name in MULTIPLICATIVE:
        torch.testing.assert_close(h * full, out, rtol=1e-5, atol=1e-6)


def capture_and_run(model: nn.Module, x: torch.Tensor) -> tuple[AttentionMaps, torch.Tensor]:
    """One forward pass inside ``capture_attention``: (maps, output)."""
    with excite.capture_attention(model) as maps, torch.no_grad():
        out = model(x)
    return maps, out


def test_model_maps_are_named_by_module_and_sized_by_stage() -> None:
    model = excite.create_model("tiny_resnet", attention="cbam", num_classes=3, in_channels=1,
                                spatial_dims=2).eval()
    x = torch.randn(N, 1, 64, 64)
    with excite.capture_attention(model) as maps, torch.no_grad():
        model(x)
    # tiny_resnet: stem /4, stages of 16, 32, 64, 128 channels at strides 1, 2, 2, 2
    expected = []
    for stage, (width, size) in enumerate(zip((16, 32, 64, 128), (16, 8, 4, 2)), start=1):
        expected += [(f"layer{stage}.0.attention.channel", (N, width)),
                     (f"layer{stage}.0.attention.spatial", (N, 1, size, size))]
    assert [(k, tuple(v.shape)) for k, v in maps.items()] == expected
    assert maps.channel().keys() == {k for k, s in expected if len(s) == 2}
    assert maps.spatial().keys() == {k for k, s in expected if len(s) == 4}
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in maps.values())


def test_x3d_records_its_own_se_in_every_other_block() -> None:
    model = excite.create_model("x3d_xs", num_classes=3).eval()
    names = [name for name, _ in attention_modules(model)]
    assert names and all(n.startswith("stages.") and n.endswith(".attention") for n in names)
    assert all(int(n.split(".")[2]) % 2 == 0 for n in names)  # blocks 0, 2, 4, ...
    with excite.capture_attention(model) as maps, torch.no_grad():
        model(torch.randn(N, 3, 4, 32, 32))
    assert list(maps) == names and all(v.ndim == 2 and v.shape[0] == N for v in maps.values())


def test_repeated_calls_concatenate_along_the_batch() -> None:
    net = _net("coord", 2)
    with excite.capture_attention(net) as maps, torch.no_grad():
        net(torch.randn(2, 3, S, S))
        net(torch.randn(3, 3, S, S))
    assert [g.shape[0] for g in maps["attention"]] == [5, 5]
    with torch.no_grad():
        net(torch.randn(4, 3, S, S))  # outside the block: nothing more is recorded
    assert [g.shape[0] for g in maps["attention"]] == [5, 5]


@pytest.mark.parametrize("name", ["se", "cam", "sam", "cbam"])
def test_capture_keeps_the_fused_kernels(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the modules' entry into the kernels (excite.kernels.unchecked), spied on
    entry = {"se": "channel_attention", "cam": "channel_attention", "sam": "spatial_attention",
             "cbam": "cbam"}[name]
    calls = []
    real = getattr(kernels.unchecked, entry)

    def spy(*args, **kwargs):
        calls.append(kwargs.get("impl"))
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels.unchecked, entry, spy)
    module = excite.create_attention(name, C, spatial_dims=2, impl="fused").eval()
    x = torch.randn(N, C, S, S)
    with torch.no_grad():
        before = module(x)
        with excite.capture_attention(module) as maps:
            during = module(x)
        after = module(x)
    assert calls == ["fused"] * 3  # the fused path inside and outside the block
    assert torch.equal(before, during) and torch.equal(during, after)
    assert _no_hooks(module) and maps
    with kernels.use_impl("reference"), torch.no_grad():  # the maps are the equations'
        reference = excite.create_attention(name, C, spatial_dims=2, impl="reference")
        reference.load_state_dict(module.state_dict())
        with excite.capture_attention(reference.eval()) as ref_maps:
            reference(x)
    assert maps.keys() == ref_maps.keys()
    for key in maps:
        torch.testing.assert_close(maps[key], ref_maps[key])


def test_capture_in_training_mode_leaves_batchnorm_statistics_alone() -> None:
    model = excite.create_attention("cbam", C, spatial_dims=2, variant="official")  # BN after the conv
    model.train()
    twin = copy.deepcopy(model)
    x = torch.randn(4, C, S, S)
    with excite.capture_attention(model) as maps:
        out = model(x)
    ref = twin(x)
    torch.testing.assert_close(out, ref)
    for (k, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), k
    assert maps["spatial"].shape == (4, 1, S, S)


def test_capture_errors_and_empty_models() -> None:
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        with excite.capture_attention("cbam"):
            pass
    plain = excite.create_model("tiny_resnet", attention=None, num_classes=2, in_channels=1, spatial_dims=1)
    with excite.capture_attention(plain) as maps, torch.no_grad():
        plain(torch.randn(2, 1, 64))
    assert dict(maps) == {} and maps.ungated == ()
