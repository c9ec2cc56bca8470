"""Every validation rule: the exception type, and a message naming the argument and
showing the received value (and the allowed ones where they are a list)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from excite.layers import (
    CBAM,
    ECA,
    SCSE,
    ChannelAttention,
    SpatialAttention,
    SqueezeExcite,
    create_attention,
)

# every class that takes channels first, with kwargs that keep the rest valid
WITH_CHANNELS = {
    "SqueezeExcite": lambda c: SqueezeExcite(c, hidden_channels=1),
    "ChannelAttention": lambda c: ChannelAttention(c, reduction=1),
    "SpatialAttention": lambda c: SpatialAttention(c),
    "CBAM": lambda c: CBAM(c, reduction=1),
    "ECA": lambda c: ECA(c),
    "SCSE": lambda c: SCSE(c, reduction=1),
}
WITH_REDUCTION = {
    "SqueezeExcite": lambda r: SqueezeExcite(64, reduction=r),
    "ChannelAttention": lambda r: ChannelAttention(64, reduction=r),
    "CBAM": lambda r: CBAM(64, reduction=r),
    "SCSE": lambda r: SCSE(64, reduction=r),
}
WITH_SPATIAL_DIMS = {
    "SpatialAttention": lambda d: SpatialAttention(8, spatial_dims=d),
    "CBAM": lambda d: CBAM(8, spatial_dims=d, reduction=2),
    "SCSE": lambda d: SCSE(8, spatial_dims=d, reduction=2),
    "create_attention": lambda d: create_attention("se", 8, spatial_dims=d, reduction=2),
}
WITH_KERNEL = {
    "SpatialAttention": lambda k: SpatialAttention(spatial_dims=2, kernel_size=k),
    "CBAM": lambda k: CBAM(8, spatial_dims=2, reduction=2, kernel_size=k),
    "ECA": lambda k: ECA(8, kernel_size=k),
}
WITH_GATE = {
    "SqueezeExcite": lambda g: SqueezeExcite(8, reduction=2, gate=g),
    "ChannelAttention": lambda g: ChannelAttention(8, reduction=2, gate=g),
    "SpatialAttention": lambda g: SpatialAttention(gate=g),
    "CBAM": lambda g: CBAM(8, reduction=2, gate=g),
    "ECA": lambda g: ECA(8, gate=g),
}
WITH_ACTIVATION = {
    "SqueezeExcite": lambda a: SqueezeExcite(8, reduction=2, activation=a),
    "ChannelAttention": lambda a: ChannelAttention(8, reduction=2, activation=a),
    "CBAM": lambda a: CBAM(8, reduction=2, activation=a),
}


def names(arg: str, value: object) -> str:
    """A regex: the argument's name, then somewhere the received value's repr."""
    return rf"\b{re.escape(arg)}\b.*{re.escape(repr(value))}"


@pytest.mark.parametrize("cls", sorted(WITH_CHANNELS))
@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (8.0, TypeError),
                                      ("8", TypeError), (True, TypeError)])
def test_channels(cls: str, bad, exc) -> None:
    with pytest.raises(exc, match=names("channels", bad)):
        WITH_CHANNELS[cls](bad)


@pytest.mark.parametrize("cls", sorted(WITH_REDUCTION))
@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-2, ValueError), (float("nan"), ValueError),
                                      ("16", TypeError), (None, TypeError), (True, TypeError)])
def test_reduction(cls: str, bad, exc) -> None:
    with pytest.raises(exc, match=names("reduction", bad)):
        WITH_REDUCTION[cls](bad)


@pytest.mark.parametrize("cls", ["SqueezeExcite", "ChannelAttention", "CBAM", "SCSE"])
def test_hidden_width_zero_names_channels_reduction_and_fix(cls: str) -> None:
    build = {
        "SqueezeExcite": lambda: SqueezeExcite(8, reduction=16),
        "ChannelAttention": lambda: ChannelAttention(8, reduction=16),
        "CBAM": lambda: CBAM(8, reduction=16),
        "SCSE": lambda: SCSE(8, reduction=16),
    }[cls]
    with pytest.raises(ValueError) as info:
        build()
    msg = str(info.value)
    assert "channels=8" in msg and "reduction=16" in msg
    assert "reduction <= 8" in msg  # the fix
    if cls == "SqueezeExcite":
        assert "hidden_channels" in msg


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_hidden_channels(bad, exc) -> None:
    with pytest.raises(exc, match=names("hidden_channels", bad)):
        SqueezeExcite(16, hidden_channels=bad)


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-8, ValueError), (8.0, TypeError)])
def test_divisor(bad, exc) -> None:
    with pytest.raises(exc, match=names("divisor", bad)):
        SqueezeExcite(16, divisor=bad)


@pytest.mark.parametrize("cls", sorted(WITH_SPATIAL_DIMS))
@pytest.mark.parametrize("bad, exc", [(0, ValueError), (4, ValueError), ("2", TypeError),
                                      (2.0, TypeError), (None, TypeError)])
def test_spatial_dims(cls: str, bad, exc) -> None:
    with pytest.raises(exc, match=names("spatial_dims", bad)):
        WITH_SPATIAL_DIMS[cls](bad)


@pytest.mark.parametrize("cls", sorted(WITH_KERNEL))
@pytest.mark.parametrize("bad, exc", [(4, ValueError), (0, ValueError), (-3, ValueError),
                                      ("7", TypeError), (7.0, TypeError)])
def test_kernel_size(cls: str, bad, exc) -> None:
    with pytest.raises(exc, match=names("kernel_size", bad)):
        WITH_KERNEL[cls](bad)


def test_kernel_size_tuple() -> None:
    with pytest.raises(ValueError, match=r"kernel_size.*3 entries.*\(3, 7\)"):
        SpatialAttention(spatial_dims=3, kernel_size=(3, 7))
    with pytest.raises(ValueError, match=names("kernel_size", (3, 6, 7))):
        SpatialAttention(spatial_dims=3, kernel_size=(3, 6, 7))
    with pytest.raises(TypeError, match=r"kernel_size"):
        ECA(8, kernel_size=(3,))


def test_eca_needs_channels_or_kernel_size() -> None:
    with pytest.raises(ValueError, match=r"channels.*kernel_size|kernel_size.*channels"):
        ECA()
    assert ECA(kernel_size=5).conv.weight.numel() == 5  # either one is enough


@pytest.mark.parametrize("cls", ["ChannelAttention", "SpatialAttention"])
def test_pools(cls: str) -> None:
    build = ChannelAttention if cls == "ChannelAttention" else SpatialAttention
    kw = {"reduction": 2} if cls == "ChannelAttention" else {}
    with pytest.raises(ValueError, match=r"\bpools\b.*\['avg', 'max'\].*'min'"):
        build(8, pools=("avg", "min"), **kw)
    with pytest.raises(ValueError, match=r"\bpools\b.*'lse'"):
        build(8, pools="lse", **kw)
    with pytest.raises(TypeError, match=r"\bpools\b.*\(\)"):
        build(8, pools=(), **kw)
    with pytest.raises(TypeError, match=r"\bpools\b.*None"):
        build(8, pools=None, **kw)
    with pytest.raises(ValueError, match=r"\bpools\b.*repeat.*\('max', 'max'\)"):
        build(8, pools=("max", "max"), **kw)


@pytest.mark.parametrize("cls", sorted(WITH_GATE))
def test_gate_names(cls: str) -> None:
    with pytest.raises(ValueError, match=r"\bgate\b.*hard_sigmoid.*'softmaxx'"):
        WITH_GATE[cls]("softmaxx")
    with pytest.raises(TypeError, match=r"\bgate\b.*Sigmoid\(\)"):
        WITH_GATE[cls](nn.Sigmoid())  # an instance, not a class
    with pytest.raises(TypeError, match=r"\bgate\b.*42"):
        WITH_GATE[cls](42)
    for ok in ("hard_sigmoid", "SIGMOID", nn.Hardsigmoid):
        WITH_GATE[cls](ok)


@pytest.mark.parametrize("cls", sorted(WITH_ACTIVATION))
def test_activation_names(cls: str) -> None:
    with pytest.raises(ValueError, match=r"\bactivation\b.*'relu'.*'swishh'"):
        WITH_ACTIVATION[cls]("swishh")
    with pytest.raises(TypeError, match=r"\bactivation\b.*int"):
        WITH_ACTIVATION[cls](int)  # a class, but not an nn.Module
    for ok in ("silu", "gelu", "identity", nn.LeakyReLU):
        WITH_ACTIVATION[cls](ok)


@pytest.mark.parametrize(
    "build, arg, bad, allowed",
    [
        (lambda v: CBAM(8, reduction=2, arrangement=v), "arrangement", "channel_spatial",
         "['channel-spatial', 'spatial-channel', 'parallel']"),
        (lambda v: CBAM(8, reduction=2, variant=v), "variant", "timm", "['paper', 'official']"),
        (lambda v: SCSE(8, reduction=2, combine=v), "combine", "mul", "['add', 'max']"),
    ],
)
def test_choices(build, arg: str, bad: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{arg}\b.*{re.escape(allowed)}.*'{bad}'"):
        build(bad)
    with pytest.raises(TypeError, match=rf"\b{arg}\b.*None"):
        build(None)


@pytest.mark.parametrize(
    "build, arg",
    [(lambda v: SqueezeExcite(8, reduction=2, bias=v), "bias"),
     (lambda v: ChannelAttention(8, reduction=2, bias=v), "bias"),
     (lambda v: SpatialAttention(norm=v), "norm")],
)
def test_bool_flags(build, arg: str) -> None:
    with pytest.raises(TypeError, match=names(arg, "yes")):
        build("yes")


@pytest.mark.parametrize(
    "build",
    [lambda v: SpatialAttention(norm=True, norm_momentum=v),
     lambda v: CBAM(8, reduction=2, norm=True, norm_momentum=v),
     lambda v: CBAM(8, reduction=2, variant="official", norm_momentum=v)],
)
@pytest.mark.parametrize("bad, exc", [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError),
                                      ("0.1", TypeError), (True, TypeError)])
def test_norm_momentum(build, bad, exc) -> None:
    with pytest.raises(exc, match=names("norm_momentum", bad)):
        build(bad)


def test_cbam_norm_flag() -> None:
    with pytest.raises(TypeError, match=names("norm", "yes")):
        CBAM(8, reduction=2, norm="yes")


def test_eca_padding_mode() -> None:
    with pytest.raises(ValueError, match=r"\bpadding_mode\b.*\['zeros', 'circular'\].*'reflect'"):
        ECA(8, padding_mode="reflect")
    with pytest.raises(TypeError, match=r"\bpadding_mode\b.*None"):
        ECA(8, padding_mode=None)
    # circular padding wraps once at most: k // 2 <= C
    with pytest.raises(ValueError, match=r"padding_mode='circular'.*kernel_size <= 5.*kernel_size=7"):
        ECA(2, kernel_size=7, padding_mode="circular")
    assert ECA(2, kernel_size=5, padding_mode="circular")(torch.randn(1, 2, 3)).shape == (1, 2, 3)


# --- forward-time checks --------------------------------------------------------------

CHANNEL_MODULES = {
    "SqueezeExcite": lambda: SqueezeExcite(8, reduction=2),
    "ChannelAttention": lambda: ChannelAttention(8, reduction=2),
    "ECA": lambda: ECA(8),
}
RANKED_MODULES = {  # built for spatial_dims=2
    "SpatialAttention": lambda: SpatialAttention(8, spatial_dims=2),
    "CBAM": lambda: CBAM(8, spatial_dims=2, reduction=2),
    "SCSE": lambda: SCSE(8, spatial_dims=2, reduction=2),
}
ALL_MODULES = {**CHANNEL_MODULES, **RANKED_MODULES}


@pytest.mark.parametrize("cls", sorted(ALL_MODULES))
@pytest.mark.parametrize("method", ["forward", "gate"])
def test_wrong_channel_count(cls: str, method: str) -> None:
    m = ALL_MODULES[cls]()
    x = torch.randn(2, 5, 4, 4)
    with pytest.raises(ValueError, match=r"channels=8.*\(2, 5, 4, 4\)"):
        getattr(m, method)(x)


@pytest.mark.parametrize("cls", sorted(CHANNEL_MODULES))
@pytest.mark.parametrize("method", ["forward", "gate"])
def test_channel_modules_need_rank_3_or_more(cls: str, method: str) -> None:
    m = CHANNEL_MODULES[cls]()
    with pytest.raises(ValueError, match=r"at least 3 dims.*\(2, 8\)"):
        getattr(m, method)(torch.randn(2, 8))
    for shape in [(2, 8, 5), (2, 8, 3, 4), (2, 8, 2, 3, 4)]:  # any rank >= 3 works
        assert getattr(m, method)(torch.randn(shape)).ndim == len(shape)


@pytest.mark.parametrize("cls", sorted(RANKED_MODULES))
@pytest.mark.parametrize("method", ["forward", "gate"])
@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 8, 3, 4, 5), (8, 4, 4)])
def test_ranked_modules_need_exact_rank(cls: str, method: str, shape) -> None:
    m = RANKED_MODULES[cls]()
    with pytest.raises(ValueError, match=rf"spatial_dims=2.*\(N, C, H, W\).*{re.escape(str(shape))}"):
        getattr(m, method)(torch.randn(shape))


@pytest.mark.parametrize("cls", sorted(ALL_MODULES))
def test_non_tensor_input(cls: str) -> None:
    with pytest.raises(TypeError, match=r"input x.*torch.Tensor.*list"):
        ALL_MODULES[cls]()([[1.0]])


def test_spatial_attention_without_channels_accepts_any_channel_count() -> None:
    m = SpatialAttention(spatial_dims=1)
    for c in (1, 3, 17):
        assert m(torch.randn(2, c, 6)).shape == (2, c, 6)
