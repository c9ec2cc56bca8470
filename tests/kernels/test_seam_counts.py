"""The kernel seam: one forward checks its input once and chooses its implementation once.

Every binding of the one input check (``excite.layers._common.check_input``), the
implementation resolver (``excite.kernels.resolve_impl``), the value rule
(``excite.kernels.check_values``) and the public, validating kernel functions is
replaced by a counting wrapper in every loaded ``excite`` module, so a call is counted
wherever it comes from.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch
from torch import nn

import excite.kernels as kernels
from excite.layers import (
    CBAM,
    ECA,
    SCSE,
    ChannelAttention,
    SpatialAttention,
    SpatialSqueezeExcite,
    SqueezeExcite,
    _common,
    create_attention,
)

C = 8
SPATIAL = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}

# name -> (builder(d), resolves an implementation?)
MODULES = {
    "se": (lambda d: SqueezeExcite(C, reduction=4), True),
    "cam": (lambda d: ChannelAttention(C, reduction=4), True),
    "sam": (lambda d: SpatialAttention(C, spatial_dims=d, kernel_size=3), True),
    "sam_bn_eval": (lambda d: SpatialAttention(C, spatial_dims=d, kernel_size=3, norm=True).eval(), True),
    "eca": (lambda d: ECA(C, kernel_size=3), False),
    "ceca": (lambda d: create_attention("ceca", C, kernel_size=3), False),
    "sse": (lambda d: SpatialSqueezeExcite(C, spatial_dims=d), False),
    "scse": (lambda d: SCSE(C, spatial_dims=d, reduction=4), True),
    "scse_max": (lambda d: SCSE(C, spatial_dims=d, reduction=4, combine="max"), True),
}
for _arr in ("channel-spatial", "spatial-channel", "parallel"):
    for _var in ("paper", "official"):
        for _mode in ("train", "eval") if _var == "official" else ("train",):  # BatchNorm
            MODULES[f"cbam_{_arr}_{_var}_{_mode}"] = (
                lambda d, a=_arr, v=_var, m=_mode: CBAM(
                    C, spatial_dims=d, reduction=4, kernel_size=3, arrangement=a, variant=v
                ).train(m == "train"),
                True,
            )

COUNTED = {
    "check_input": _common.check_input,
    "resolve_impl": kernels.resolve_impl,
    "check_values": kernels.check_values,
    "kernels.squeeze_excite": kernels.squeeze_excite,
    "kernels.channel_attention": kernels.channel_attention,
    "kernels.spatial_attention": kernels.spatial_attention,
    "kernels.cbam": kernels.cbam,
}


@pytest.fixture
def calls(monkeypatch) -> Counter:
    counter: Counter = Counter()

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counter[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    for name, fn in COUNTED.items():
        wrapped = counting(name, fn)
        for mod_name, mod in list(sys.modules.items()):
            if mod is None or not (mod_name == "excite" or mod_name.startswith("excite.")):
                continue
            for attr, value in list(vars(mod).items()):
                if value is fn:
                    monkeypatch.setattr(mod, attr, wrapped)
    return counter


def _impls(name: str) -> list[str]:
    if name.startswith("cbam_parallel"):
        return ["auto", "reference"]  # no fused form
    if "official_train" in name or name.startswith(("eca", "ceca", "sse")):
        return ["auto", "reference"]  # training-mode BatchNorm / no kernel
    return ["auto", "reference", "fused"]


CASES = [(name, 2) for name in sorted(MODULES)] + [
    ("se", 1), ("sam", 1), ("cbam_channel-spatial_official_eval", 3),
    ("cbam_spatial-channel_paper_train", 1),
]


@pytest.mark.parametrize("name, d", CASES)
def test_one_check_and_one_choice_per_forward(name: str, d: int, calls: Counter) -> None:
    build, resolves = MODULES[name]
    m = build(d)
    x = torch.randn(2, C, *SPATIAL[d], requires_grad=True)
    for impl in _impls(name):
        for mod in m.modules():
            if hasattr(mod, "impl"):
                mod.impl = impl
        calls.clear()
        y = m(x)
        assert y.shape == x.shape
        assert calls["check_input"] == 1, (impl, dict(calls))
        assert calls["check_values"] == 1, (impl, dict(calls))
        assert calls["resolve_impl"] == (1 if resolves else 0), (impl, dict(calls))
        assert not any(calls[k] for k in COUNTED if k.startswith("kernels.")), (impl, dict(calls))
        y.sum().backward()  # backward adds no checks
        assert calls["check_input"] == 1
        calls.clear()
        m.gate(x)
        assert calls["check_input"] == 1 and calls["resolve_impl"] == 0, dict(calls)


def test_parallel_cbam_refuses_an_explicit_fused_request() -> None:
    m = CBAM(C, reduction=4, kernel_size=3, arrangement="parallel", impl="fused")
    with pytest.raises(ValueError, match="impl='fused' is not available"):
        m(torch.randn(2, C, 5, 6))


def test_public_kernel_functions_check_once_and_resolve_once(calls: Counter) -> None:
    x = torch.randn(2, C, 5, 6)
    w1, w2 = torch.randn(2, C), torch.randn(C, 2)
    w = torch.randn(1, 2, 3, 3)
    for impl in ("auto", "reference", "fused"):
        calls.clear()
        kernels.cbam(x, w1, None, w2, None, w, impl=impl)
        assert calls["resolve_impl"] == 1 and calls["check_values"] == 1, dict(calls)
        assert calls["check_input"] == 0
        calls.clear()
        kernels.squeeze_excite(x, w1, None, w2, None, impl=impl)
        assert calls["resolve_impl"] == 1 and calls["check_values"] == 1, dict(calls)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_modules_call_the_unchecked_entry_once(impl: str, monkeypatch) -> None:
    """The fused paths are reached through excite.kernels.unchecked, once per block."""
    seen: Counter = Counter()
    for fn in ("channel_attention", "spatial_attention", "cbam"):
        real = getattr(kernels.unchecked, fn)
        monkeypatch.setattr(
            kernels.unchecked, fn, lambda *a, _f=fn, _r=real, **k: seen.update([_f]) or _r(*a, **k)
        )
    x = torch.randn(2, C, 5, 6)
    expected = {
        "se": {"channel_attention": 1},
        "sam": {"spatial_attention": 1},
        "cbam_channel-spatial_paper_train": {"cbam": 1},
        "cbam_spatial-channel_paper_train": {"spatial_attention": 1, "channel_attention": 1},
        "scse": {"channel_attention": 1},
    }
    for name, want in expected.items():
        m = MODULES[name][0](2)
        for mod in m.modules():
            if isinstance(mod, nn.Module) and hasattr(mod, "impl"):
                mod.impl = impl
        seen.clear()
        m(x)
        assert dict(seen) == ({} if impl == "reference" else want), name
