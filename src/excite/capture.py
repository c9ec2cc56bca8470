"""Record the attention maps a model computes: :func:`capture_attention`.

```python
with excite.capture_attention(model) as maps:
    logits = model(x)
maps["layer4.1.attention.spatial"]     # (N, 1, *spatial): CBAM's spatial map M_s
maps["layer4.1.attention.channel"]     # (N, C): CBAM's channel gate M_c
maps.spatial(), maps.channel()         # only the spatial maps / only the channel gates
```

While the block is open, a forward hook on every attention module (a module with a
``gate(x)`` method, or an instance of a registered attention class) calls the module's
public ``gate`` on the module's own input, without gradient, and records the result by
module name. The forward pass itself is untouched: the module runs whatever path it
would run anyway (the fused kernels included) and its output is the same tensor. On
exit the hooks are removed, so a model outside the block runs exactly as before.

What is recorded (float32, on the CPU, detached; a module called several times has its
maps concatenated along the batch):

- a channel gate (N, C, 1, ..., 1) as ``(N, C)``;
- a spatial map (N, 1, *spatial) as it is (GCNet's context weights are one too);
- any other tensor as it is: full (N, C, *spatial) weights (SimAM, BAM, strip pooling),
  the non-local block's (N, positions, positions) affinities, SK's (N, branches, C, 1,
  ...) branch weights;
- a tuple (one gate per spatial axis: coordinate attention and ELA give (N, C, H, 1) and
  (N, C, 1, W) at 2D; triplet attention one gate per branch) as a tuple of the shapes
  ``gate`` returns, which broadcast against the input (their product is the full map).

Two composite modules are recorded by their parts, under the parts' own module names:
CBAM as ``NAME.channel`` (M_c, (N, C)) and ``NAME.spatial`` (M_s, (N, 1, *spatial)), each
computed on the input the part sees in the module's arrangement (M_s of the
channel-refined ``M_c(x) ⊙ x`` in the paper's "channel-spatial" order); scSE as
``NAME.channel`` (cSE) and ``NAME.spatial`` (sSE), both of ``x``. Names are the
modules' names in ``model.named_modules()`` (the empty string when ``model`` itself is
the attention module; its parts are then ``channel`` and ``spatial``). Attention modules
without a ``gate`` are listed in ``maps.ungated``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from excite.layers import CBAM, SCSE, attention_factory, list_attention

__all__ = ["AttentionMaps", "Map", "attention_modules", "capture_attention"]

#: what one recorded entry holds: a tensor, or a tuple of tensors (per-axis gates)
Map = torch.Tensor | tuple[torch.Tensor, ...]


class AttentionMaps(dict):
    """Module name -> recorded map (see :mod:`excite.capture` for the shapes).

    A ``dict`` in forward order, plus:

    Attributes:
        ungated: names of attention modules that have no ``gate`` (nothing recorded).
    """

    def __init__(self, ungated: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.ungated = tuple(ungated)

    def channel(self) -> dict[str, torch.Tensor]:
        """The channel gates, each (N, C)."""
        return {k: v for k, v in self.items() if isinstance(v, torch.Tensor) and v.ndim == 2}

    def spatial(self) -> dict[str, torch.Tensor]:
        """The single-channel spatial maps, each (N, 1, *spatial)."""
        return {
            k: v for k, v in self.items()
            if isinstance(v, torch.Tensor) and v.ndim >= 3 and v.shape[1] == 1
        }

    def _add(self, name: str, value: Map) -> None:
        old = self.get(name)
        if old is None:
            self[name] = value
        elif isinstance(value, torch.Tensor):
            self[name] = torch.cat([old, value])
        else:
            self[name] = tuple(torch.cat([a, b]) for a, b in zip(old, value))


def _registered_classes() -> tuple[type, ...]:
    builders = (attention_factory(name).builder for name in list_attention())
    return tuple(b for b in builders if isinstance(b, type))


def _has_gate(module: nn.Module) -> bool:
    gate = getattr(type(module), "gate", None)
    return callable(gate) and not isinstance(gate, nn.Module)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost attention modules of ``model``, in registration order.

    An attention module is an instance of a registered attention class or any module
    whose class defines a ``gate`` method; modules inside another one (CBAM's
    ``channel``/``spatial``) are left to their parent. ``nn.Identity`` ("no attention")
    is not one.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    classes = _registered_classes()
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") or prefix == "" for prefix, _ in found):
            continue
        if isinstance(module, classes) or _has_gate(module):
            found.append((name, module))
    return found


def _is_channel_gate(value: torch.Tensor, x: torch.Tensor) -> bool:
    """(N, C, 1, ..., 1) for an input (N, C, *spatial), and not a spatial map of an input
    whose spatial sizes are all 1 (then (N, 1, 1, ..., 1) is M_s, not a 1-channel gate)."""
    if value.ndim != x.ndim or value.shape[1] != x.shape[1]:
        return False
    if any(s != 1 for s in value.shape[2:]):
        return False
    return value.shape[1] != 1 or any(s != 1 for s in x.shape[2:])


def _copy(value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"gate() must return a tensor or a tuple of tensors, got {type(value).__name__}")
    return value.detach().float().cpu()


def _as_recorded(value: object, x: torch.Tensor) -> Map:
    """One gate as recorded: float32 CPU copies; a channel gate as (N, C); a tuple as is
    (its gates keep the shapes that broadcast against x)."""
    if isinstance(value, (tuple, list)):
        return tuple(_copy(v) for v in value)
    value = _copy(value)
    if _is_channel_gate(value, x):
        value = value.reshape(value.shape[0], value.shape[1])
    return value


def _parts(name: str, module: nn.Module, x: torch.Tensor) -> list[tuple[str, object]]:
    """(name, raw gate) pairs of one attention module for its input ``x``."""
    if isinstance(module, CBAM):
        channel, spatial = module.channel, module.spatial
        if module.arrangement == "channel-spatial":
            mc = channel.gate(x)
            ms = spatial.gate(x * mc)
        elif module.arrangement == "spatial-channel":
            ms = spatial.gate(x)
            mc = channel.gate(x * ms)
        else:  # parallel: both maps of x
            mc, ms = channel.gate(x), spatial.gate(x)
        return [(_child(name, "channel"), mc), (_child(name, "spatial"), ms)]
    if isinstance(module, SCSE):
        return [
            (_child(name, "channel"), module.channel.gate(x)),
            (_child(name, "spatial"), module.spatial.gate(x)),
        ]
    return [(name, module.gate(x))]


def _child(name: str, part: str) -> str:
    return f"{name}.{part}" if name else part


def _hook(name: str, maps: AttentionMaps) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        # a training-mode BatchNorm inside the gate would update its running statistics a
        # second time: keep the buffers as the real forward pass left them
        saved = [(b, b.clone()) for b in module.buffers()] if module.training else []
        try:
            with torch.no_grad():
                parts = _parts(name, module, x)
        finally:
            for buffer, value in saved:
                buffer.copy_(value)
        for key, value in parts:
            maps._add(key, _as_recorded(value, x))

    return hook


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[AttentionMaps]:
    """Record every attention module's gates while the block runs.

    Args:
        model: any ``nn.Module`` (an excite model, a user's model with attention
            attached, or a single attention module).

    Yields:
        An :class:`AttentionMaps` (module name -> map) filled by each forward pass in the
        block; it stays readable after the block.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``; a ``gate`` that returns something
            other than tensors.
    """
    found = attention_modules(model)
    maps = AttentionMaps(tuple(name for name, m in found if not _has_gate(m)))
    handles = [
        module.register_forward_hook(_hook(name, maps)) for name, module in found if _has_gate(module)
    ]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
