"""timm parity for the zoo's part A: an excite configuration reproduces timm's 2D module
exactly once its weights are renamed (the mappings documented in docs/layers.md).

Two layers of tests:

* always: a hand-built stand-in for each timm module (a state dict with timm's parameter
  names and shapes, and timm's forward re-implemented here with ``torch.nn.functional``)
  against the excite module loaded through the family's ``*_from_timm`` mapping
  (strictly: every key used, every shape right);
* when timm is installed: the real timm module (its state dict must have exactly the
  stand-in's names and shapes) against the excite module, through the same mapping.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from excite.layers import (
    CoordinateAttention,
    EffectiveSqueezeExcite,
    EfficientLocalAttention,
    GatherExcite,
    GlobalContext,
    StripPooling,
)
from excite.layers.coordinate import coordinate_from_timm
from excite.layers.effective_se import effective_se_from_timm
from excite.layers.efficient_local import efficient_local_from_timm
from excite.layers.gather_excite import gather_excite_from_timm
from excite.layers.global_context import global_context_from_timm
from excite.layers.strip_pooling import strip_pooling_from_timm

C = 32
SIZE = (9, 10)
TOL = dict(atol=1e-6, rtol=1e-6)


def timm_rd(channels: float, divisor: int) -> int:
    """timm's ``make_divisible(v, divisor, round_limit=0.)``: nearest multiple, at least
    ``divisor``, never bumped up."""
    return max(divisor, int(channels + divisor / 2) // divisor * divisor)


GE_RD = timm_rd(C / 16, 1)          # GatherExcite: rd_ratio 1/16, divisor 1
GC_RD = timm_rd(C / 8, 1)           # GlobalContext: rd_ratio 1/8, divisor 1
COORD_RD = timm_rd(C / 16 * 2 / 3, 8)  # CoordAttn: rd_ratio 1/16 x se_factor 2/3, divisor 8


def bn_layout(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
            f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}


def mlp_layout(prefix: str, hidden: int, norm: bool = False) -> dict[str, tuple[int, ...]]:
    out = {f"{prefix}.fc1.weight": (hidden, C, 1, 1), f"{prefix}.fc1.bias": (hidden,)}
    if norm:
        out.update({f"{prefix}.norm.weight": (hidden,), f"{prefix}.norm.bias": (hidden,)})
    out.update({f"{prefix}.fc2.weight": (C, hidden, 1, 1), f"{prefix}.fc2.bias": (C,)})
    return out


# name -> (timm constructor kwargs, timm state-dict layout, excite module, key mapping)
CASES = {
    "ese": (
        {}, {"fc.weight": (C, C, 1, 1), "fc.bias": (C,)},
        lambda: EffectiveSqueezeExcite(C),
        effective_se_from_timm,
    ),
    "ge": (  # timm's default: global extent, no gather parameters, with the MLP
        {}, mlp_layout("mlp", GE_RD),
        lambda: GatherExcite(C, spatial_dims=2, mlp=True, hidden_channels=GE_RD),
        gather_excite_from_timm,
    ),
    "ge_extent2": (  # theta-minus, extent 2, no MLP
        {"extent": 2, "use_mlp": False}, {},
        lambda: GatherExcite(C, spatial_dims=2, extent=2),
        gather_excite_from_timm,
    ),
    "ge_theta_plus4": (  # theta-plus, extent 4
        {"extent": 4, "extra_params": True},
        {"gather.conv1.weight": (C, 1, 3, 3), **bn_layout("gather.norm1", C),
         "gather.conv2.weight": (C, 1, 3, 3), **bn_layout("gather.norm2", C),
         **mlp_layout("mlp", GE_RD)},
        lambda: GatherExcite(C, spatial_dims=2, extent=4, learned_gather=True, mlp=True,
                             hidden_channels=GE_RD),
        gather_excite_from_timm,
    ),
    "gc": (  # timm's "gc": scale fusion
        {}, {"conv_attn.weight": (1, C, 1, 1), "conv_attn.bias": (1,), **mlp_layout("mlp_scale", GC_RD, True)},
        lambda: GlobalContext(C, hidden_channels=GC_RD, fusion="scale", norm_eps=1e-6),
        global_context_from_timm,
    ),
    "gca": (  # timm's "gca": add fusion
        {"fuse_add": True, "fuse_scale": False},
        {"conv_attn.weight": (1, C, 1, 1), "conv_attn.bias": (1,), **mlp_layout("mlp_add", GC_RD, True)},
        lambda: GlobalContext(C, hidden_channels=GC_RD, fusion="add", norm_eps=1e-6),
        global_context_from_timm,
    ),
    "coord": (
        {}, {"conv1.weight": (COORD_RD, C, 1, 1), **bn_layout("bn1", COORD_RD),
             "conv_h.weight": (C, COORD_RD, 1, 1), "conv_w.weight": (C, COORD_RD, 1, 1)},
        lambda: CoordinateAttention(C, spatial_dims=2, hidden_channels=COORD_RD, bias=False),
        coordinate_from_timm,
    ),
    "ela": (
        {}, {"conv_h.weight": (C, 1, 7, 1), "conv_w.weight": (C, 1, 1, 7),
             "norm_h.weight": (C,), "norm_h.bias": (C,), "norm_w.weight": (C,), "norm_w.bias": (C,)},
        lambda: EfficientLocalAttention(C, spatial_dims=2, kernel_size=7, shared=False,
                                        norm_groups=1, activation="silu"),
        efficient_local_from_timm,
    ),
    "strip": (
        {}, {"conv_h.weight": (C, 1, 3, 1), "conv_w.weight": (C, 1, 1, 3)},
        lambda: StripPooling(C, spatial_dims=2, kernel_size=3, depthwise=True, norm=False,
                             fusion="sum"),
        strip_pooling_from_timm,
    ),
}


def to_excite(name: str, timm_state: dict[str, torch.Tensor], excite_module) -> dict[str, torch.Tensor]:
    """The family's ``*_from_timm`` mapping; the keys must be exactly the module's and
    every value must have the module's shape."""
    mapped = CASES[name][3](timm_state)
    target = excite_module.state_dict()
    assert set(mapped) == set(target)
    for key, value in mapped.items():
        assert value.shape == target[key].shape, key
    return mapped


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.5
    return state


# --- timm's forwards, re-implemented from its code ---------------------------------------


def _bn(t, s, prefix, training=False):
    return F.batch_norm(t, s[prefix + "running_mean"].clone(), s[prefix + "running_var"].clone(),
                        s[prefix + "weight"], s[prefix + "bias"], training=training, eps=1e-5)


def _conv_mlp(t, s, prefix, norm=False):
    t = F.conv2d(t, s[prefix + "fc1.weight"], s[prefix + "fc1.bias"])
    if norm:  # timm's LayerNorm2d: LayerNorm over channels at every position, eps 1e-6
        t = F.layer_norm(t.permute(0, 2, 3, 1), t.shape[1:2], s[prefix + "norm.weight"],
                         s[prefix + "norm.bias"], 1e-6).permute(0, 3, 1, 2)
    return F.conv2d(F.relu(t), s[prefix + "fc2.weight"], s[prefix + "fc2.bias"])


def timm_forward(name: str, s: dict[str, torch.Tensor], x: torch.Tensor, training=False) -> torch.Tensor:
    n, c, h, w = x.shape
    if name == "ese":
        return x * F.hardsigmoid(F.conv2d(x.mean((2, 3), keepdim=True), s["fc.weight"], s["fc.bias"]))
    if name.startswith("ge"):
        if name == "ge":
            g = x.mean((2, 3), keepdim=True)
        elif name == "ge_extent2":
            g = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
        else:
            g = _bn(F.conv2d(x, s["gather.conv1.weight"], stride=2, padding=1, groups=c), s, "gather.norm1.")
            g = F.relu(g)
            g = _bn(F.conv2d(g, s["gather.conv2.weight"], stride=2, padding=1, groups=c), s, "gather.norm2.")
        if "mlp.fc1.weight" in s:
            g = _conv_mlp(g, s, "mlp.")
        if g.shape[-1] != 1 or g.shape[-2] != 1:
            g = F.interpolate(g, size=(h, w))
        return x * torch.sigmoid(g)
    if name in ("gc", "gca"):
        attn = F.conv2d(x, s["conv_attn.weight"], s["conv_attn.bias"]).reshape(n, 1, h * w)
        attn = F.softmax(attn, dim=-1).unsqueeze(3)
        context = (x.reshape(n, c, h * w).unsqueeze(1) @ attn).view(n, c, 1, 1)
        if name == "gc":
            return x * torch.sigmoid(_conv_mlp(context, s, "mlp_scale.", norm=True))
        return x + _conv_mlp(context, s, "mlp_add.", norm=True)
    if name == "coord":
        x_h = x.mean(3, keepdim=True)
        x_w = x.mean(2, keepdim=True).transpose(-1, -2)
        y = F.hardswish(_bn(F.conv2d(torch.cat([x_h, x_w], dim=2), s["conv1.weight"]), s, "bn1.",
                            training))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = torch.sigmoid(F.conv2d(x_h, s["conv_h.weight"]))
        a_w = torch.sigmoid(F.conv2d(x_w.transpose(-1, -2), s["conv_w.weight"]))
        return x * a_w * a_h
    if name == "ela":
        x_h = F.conv2d(x.mean(3, keepdim=True), s["conv_h.weight"], padding=(3, 0), groups=c)
        x_w = F.conv2d(x.mean(2, keepdim=True), s["conv_w.weight"], padding=(0, 3), groups=c)
        x_h = F.silu(F.group_norm(x_h, 1, s["norm_h.weight"], s["norm_h.bias"], 1e-5))
        x_w = F.silu(F.group_norm(x_w, 1, s["norm_w.weight"], s["norm_w.bias"], 1e-5))
        return x * torch.sigmoid(x_h) * torch.sigmoid(x_w)
    if name == "strip":
        x_h = F.conv2d(x.mean(3, keepdim=True), s["conv_h.weight"], padding=(1, 0), groups=c)
        x_w = F.conv2d(x.mean(2, keepdim=True), s["conv_w.weight"], padding=(0, 1), groups=c)
        return x * torch.sigmoid(x_h + x_w)
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mapping_against_timm_layout_stand_in(name: str) -> None:
    _, layout, build, _ = CASES[name]
    timm_state = random_state(layout)
    ours = build().eval()
    ours.load_state_dict(to_excite(name, timm_state, ours), strict=True)  # every key used
    assert sum(p.numel() for p in ours.parameters()) == sum(
        math.prod(shape) for key, shape in layout.items()
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    x = torch.randn(3, C, *SIZE)
    torch.testing.assert_close(ours(x), timm_forward(name, timm_state, x), **TOL)


def test_coord_batch_statistics_over_the_concatenated_strips() -> None:
    """In training mode, both normalise over N x (H + W): the concatenation matters."""
    _, layout, build, _ = CASES["coord"]
    timm_state = random_state(layout, seed=1)
    ours = build().train()
    ours.load_state_dict(to_excite("coord", timm_state, ours))
    x = torch.randn(3, C, *SIZE)
    torch.testing.assert_close(ours(x), timm_forward("coord", timm_state, x, training=True), **TOL)


# --- the real timm modules (skipped when timm is not installed) --------------------------


TIMM_CLASSES = {  # name -> (timm module, class)
    "ese": ("timm.layers.squeeze_excite", "EffectiveSEModule"),
    "ge": ("timm.layers.gather_excite", "GatherExcite"),
    "ge_extent2": ("timm.layers.gather_excite", "GatherExcite"),
    "ge_theta_plus4": ("timm.layers.gather_excite", "GatherExcite"),
    "gc": ("timm.layers.global_context", "GlobalContext"),
    "gca": ("timm.layers.global_context", "GlobalContext"),
    "coord": ("timm.layers.coord_attn", "CoordAttn"),
    "ela": ("timm.layers.coord_attn", "EfficientLocalAttn"),
    "strip": ("timm.layers.coord_attn", "StripAttn"),
}


def timm_module(name: str):
    pytest.importorskip("timm")
    module, cls = TIMM_CLASSES[name]
    try:
        layer = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        pytest.skip(f"this timm version has no {module}.{cls}")
    try:
        return layer(C, **CASES[name][0])
    except TypeError as error:  # e.g. timm 1.0.31's GatherExcite with an MLP (``*dd``)
        pytest.skip(f"{cls}(**{CASES[name][0]}) does not construct in this timm: {error}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_timm_module(name: str) -> None:
    ref = timm_module(name)
    layout = CASES[name][1]
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == layout
    ref.load_state_dict(random_state(layout, seed=2))
    ref.eval()
    ours = CASES[name][2]().eval()
    ours.load_state_dict(to_excite(name, ref.state_dict(), ours), strict=True)
    x = torch.randn(3, C, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), **TOL)


def test_mapping_rejects_keys_that_are_not_timm_s() -> None:
    with pytest.raises(ValueError, match=r"'conv_x\.weight'.*CoordAttn"):
        coordinate_from_timm({"conv_x.weight": torch.zeros(1)})
