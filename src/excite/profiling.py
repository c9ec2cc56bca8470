"""Parameters, multiply-adds, per-layer table and training activation memory of a model.

``excite.profile(model, input_shape)`` runs one forward pass on the *meta* device (no
memory, no arithmetic: shapes only), so even ResNet-152 on a video clip profiles in
well under a second, and the caller's model is never modified.

* MACs: ``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of matrix
  products and convolutions (aten mm / addmm / bmm / convolution …), 2 per
  multiply-add, so MACs = FLOPs / 2. Element-wise work (BatchNorm, activations, pooling,
  gating products) is not counted, matching the convention of the SE, CBAM and
  torchvision tables: a conv with K filters of C_in/g x k^d over an output of P
  positions costs P·K·(C_in/g)·k^d; a Linear(C, K) costs C·K per row.
* activation_bytes: the tensors autograd saves for backward during one training-mode
  forward (``torch.autograd.graph.saved_tensors_hooks``), deduplicated by storage,
  excluding the model's own parameters and buffers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["LayerProfile", "Profile", "profile"]


@dataclass(frozen=True)
class LayerProfile:
    """One row of the per-layer table.

    Attributes:
        name: qualified module name ("layer1.0.conv1").
        type: module class name.
        output_shape: shape of the module's (first) output tensor.
        params: parameters the module owns directly (not those of its children).
        macs: multiply-adds of ops run directly by the module (children excluded).
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class Profile:
    """Result of :func:`profile`.

    Attributes:
        input_shape: the profiled input shape (N, C, *spatial).
        params: all parameters.
        trainable_params: parameters with ``requires_grad``.
        macs: multiply-adds of one forward pass (conv and matrix products).
        activation_bytes: bytes autograd saves for backward in one training step.
        output_shape: shape of the model output.
        layers: per-module rows, in execution order.
    """

    input_shape: tuple[int, ...]
    params: int
    trainable_params: int
    macs: int
    activation_bytes: int
    output_shape: tuple[int, ...]
    layers: tuple[LayerProfile, ...] = field(default=())

    @property
    def gmacs(self) -> float:
        """MACs in units of 1e9."""
        return self.macs / 1e9

    def to_dict(self, *, per_layer: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (``layers`` left out unless ``per_layer``)."""
        data = asdict(self)
        data["gmacs"] = self.gmacs
        if not per_layer:
            data.pop("layers")
        return data

    def to_json(self, *, per_layer: bool = True, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(per_layer=per_layer), indent=indent)

    def summary(self) -> str:
        """The totals, one per line."""
        shape = "x".join(str(s) for s in self.input_shape)
        return "\n".join([
            f"input             {shape}",
            f"output            {'x'.join(str(s) for s in self.output_shape)}",
            f"params            {self.params:,}",
            f"trainable params  {self.trainable_params:,}",
            f"MACs              {self.macs:,} ({self.gmacs:.4f} G)",
            f"activations       {self.activation_bytes / 2**20:,.1f} MiB saved for backward",
        ])

    def table(self) -> str:
        """The per-layer table as aligned text."""
        header = ("layer", "type", "output shape", "params", "MACs")
        rows = [
            (r.name, r.type, "x".join(str(s) for s in r.output_shape), f"{r.params:,}",
             f"{r.macs:,}")
            for r in self.layers
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
                  for i, h in enumerate(header)]
        right = (False, False, False, True, True)

        def fmt(row: Sequence[str]) -> str:
            return "  ".join(
                cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)
            ).rstrip()

        lines = [fmt(header), fmt(["-" * w for w in widths])]
        lines += [fmt(row) for row in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _check_shape(input_shape: object) -> tuple[int, ...]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) < 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape)
    ):
        raise ValueError(
            f"input_shape must be a sequence of positive ints (N, C, *spatial), got "
            f"{input_shape!r}"
        )
    return tuple(input_shape)


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def profile(model: nn.Module, input_shape: Sequence[int], *, dtype: torch.dtype = torch.float32
            ) -> Profile:
    """Count parameters and multiply-adds, and measure training activation memory.

    The forward runs on the meta device against meta copies of the parameters and
    buffers (``torch.func.functional_call``), in training mode, so the model's weights,
    BatchNorm statistics and train/eval flag are left as they were.

    Args:
        model: any ``nn.Module`` taking one tensor.
        input_shape: (N, C, *spatial), e.g. ``(1, 3, 224, 224)``.
        dtype: dtype of the meta input and of the floating-point parameters and
            buffers during the pass (activation bytes scale with it).

    Returns:
        :class:`Profile`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``input_shape`` is not a sequence of positive ints.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _check_shape(input_shape)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def meta_like(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(
            t, device="meta", dtype=dtype if t.is_floating_point() else t.dtype
        )

    meta_state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        meta_state[name] = nn.Parameter(meta_like(p), requires_grad=p.requires_grad)
    for name, b in model.named_buffers(remove_duplicate=False):
        meta_state[name] = meta_like(b)
    own_storages = {t.untyped_storage()._cdata for t in meta_state.values()}

    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    inclusive: dict[nn.Module, int] = {}
    outputs: dict[nn.Module, tuple[int, ...]] = {}
    starts: dict[nn.Module, list[int]] = {}
    counter = FlopCounterMode(display=False)

    def pre_hook(module: nn.Module, args: Any) -> None:
        if module not in inclusive:
            order.append(module)
            inclusive[module] = 0
        starts.setdefault(module, []).append(counter.get_total_flops())

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        start = starts[module].pop()
        inclusive[module] += counter.get_total_flops() - start
        tensor = _first_tensor(output)
        if tensor is not None:
            outputs[module] = tuple(tensor.shape)

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))

    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in own_storages:
            saved[key] = storage.nbytes()
        return tensor

    was_training = {m: m.training for m in model.modules()}
    x = torch.empty(shape, device="meta", dtype=dtype)
    try:
        model.train()
        with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = torch.func.functional_call(model, meta_state, (x,), strict=False)
    except ValueError as exc:
        if "more than 1 value per channel" in str(exc):
            raise ValueError(
                f"input_shape {shape} leaves a BatchNorm with one value per channel in "
                f"training mode ({exc}); use a batch size >= 2 or a larger input"
            ) from exc
        raise
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag

    total_flops = counter.get_total_flops()
    rows = []
    for module in order:
        child_flops = sum(inclusive.get(c, 0) for c in module.children())
        self_macs = (inclusive[module] - child_flops) // 2
        own = sum(p.numel() for p in module.parameters(recurse=False))
        is_leaf = next(module.children(), None) is None
        if module is model or not (is_leaf or own or self_macs):
            continue
        rows.append(LayerProfile(
            name=names[module], type=type(module).__name__,
            output_shape=outputs.get(module, ()), params=own, macs=self_macs,
        ))
    out_tensor = _first_tensor(out)
    return Profile(
        input_shape=shape,
        params=params,
        trainable_params=trainable,
        macs=total_flops // 2,
        activation_bytes=sum(saved.values()),
        output_shape=tuple(out_tensor.shape) if out_tensor is not None else (),
        layers=tuple(rows),
    )
