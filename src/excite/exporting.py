"""Export a model and verify it: :func:`export` (``excite.export``) and :class:`ExportReport`.

```python
report = excite.export(model, torch.randn(2, 1, 16, 64, 64), "model.onnx", format="onnx")
print(report.parity_line())   # parity (onnxruntime, ...): max abs err ..., max rel err ...: ok
```

Three formats, one contract::

    model, example ──export──▶ artefact (temp file) ──load──▶ run on a fresh input ──▶ compare
                                                                                        │
                     path ◀── os.replace ◀── parity within tolerance ◀─────────────────┘

- ``"onnx"``: ``torch.onnx.export(..., dynamo=True)`` at opset >= 18; when the dynamo
  exporter fails, the TorchScript-based exporter at the same opset (the report says which
  ran and why). The graph is checked for global pooling: it must appear as
  ReduceMean/ReduceMax or GlobalAveragePool/GlobalMaxPool, never as an adaptive-pool op,
  an ATen fallback, or an AveragePool/MaxPool whose window is the whole input (which
  fixes the spatial size). Verified with onnxruntime (the ``export`` extra).
- ``"exported-program"``: ``torch.export.export`` saved with ``torch.export.save``
  (``.pt2``), verified with ``torch.export.load(path).module()``.
- ``"torchscript"``: ``torch.jit.trace`` saved with ``torch.jit.save``, verified with
  ``torch.jit.load``.

The attention modules run their reference path (the plain equations) while exported or
traced (``excite.kernels.resolve_impl``), so the artefact holds standard ops only.

The parity check runs the loaded artefact and the eager model on a fresh random input
(batch ``N + 1`` for an example of batch ``N`` when ``dynamic_batch``) and compares:
``max_abs_err = max |y_artefact - y_eager|`` and ``max_rel_err = max_abs_err /
max |y_eager|`` (the error relative to the output's scale, per output). It passes when
``max_rel_err <= rtol`` (1e-4 by default, for float32). The file appears at ``path`` only
after the check passed; a failing check raises :class:`ExportError` and leaves ``path``
as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from excite.checks import check_bool, check_choice, check_positive_int
from excite.errors import ExciteError, require

__all__ = [
    "FORMATS", "SUFFIXES", "ExportError", "ExportReport", "eval_mode", "export", "onnx_pool_ops",
]

FORMATS = ("onnx", "exported-program", "torchscript")
#: the usual file suffix of each format
SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2", "torchscript": ".pt"}
MIN_OPSET = 18
#: ONNX ops that compute global pooling the portable way
GLOBAL_POOL_OPS = ("ReduceMean", "ReduceMax", "GlobalAveragePool", "GlobalMaxPool")


class ExportError(ExciteError):
    """The export failed, or the exported artefact does not match the eager model.

    Attributes:
        report: the :class:`ExportReport` when the export ran and the check failed.
    """

    def __init__(self, message: str, report: ExportReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclasses.dataclass
class ExportReport:
    """What :func:`export` wrote and how well it matches the eager model.

    Attributes:
        path: the artefact.
        format: "onnx", "exported-program" or "torchscript".
        exporter: "dynamo" or "torchscript" (ONNX), "torch.export", or "jit.trace".
        opset: the ONNX opset (None for the other formats).
        fallback_reason: why the dynamo ONNX exporter was not used (first line of its
            error), else None.
        dynamic_batch: whether the batch dimension is dynamic in the artefact.
        example_shape: the shape the model was exported with.
        check_shape: the shape of the fresh input the parity check ran on.
        max_abs_err: max |artefact - eager| over all outputs.
        max_rel_err: max over outputs of max_abs_err / max |eager output|.
        rtol: the tolerance max_rel_err was held to.
        runtime: what ran the artefact ("onnxruntime <version>", "torch.export.load",
            "torch.jit.load").
        pool_ops: ONNX global-pooling ops in the graph, by type (empty otherwise).
        file_bytes: the artefact's size.
    """

    path: Path
    format: str
    exporter: str
    opset: int | None
    fallback_reason: str | None
    dynamic_batch: bool
    example_shape: tuple[int, ...]
    check_shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    rtol: float
    runtime: str
    pool_ops: dict[str, int]
    file_bytes: int

    @property
    def passed(self) -> bool:
        """True when the parity check is within ``rtol``."""
        return self.max_rel_err <= self.rtol

    def parity_line(self) -> str:
        """``parity (RUNTIME, input SHAPE vs example SHAPE): max abs err ..., ...: ok|FAILED``."""
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"parity ({self.runtime}, input {_shape(self.check_shape)} vs example "
            f"{_shape(self.example_shape)}): max abs err {self.max_abs_err:.2e}, max rel err "
            f"{self.max_rel_err:.2e} (tolerance {self.rtol:.0e}): {verdict}"
        )

    def summary(self) -> str:
        """Two or three lines: what was written, the pooling ops (ONNX), the parity line."""
        how = self.exporter + (f" exporter, opset {self.opset}" if self.format == "onnx" else "")
        batch = "dynamic batch" if self.dynamic_batch else "static batch"
        lines = [f"exported {self.path} ({self.format}, {how}, {batch}, {self.file_bytes / 1e6:.1f} MB)"]
        if self.fallback_reason:
            lines.append(f"dynamo exporter failed, used the TorchScript exporter: {self.fallback_reason}")
        if self.format == "onnx":
            pools = ", ".join(f"{k} x{v}" for k, v in sorted(self.pool_ops.items())) or "none"
            lines.append(f"global pooling ops: {pools}")
        lines.append(self.parity_line())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        data["passed"] = self.passed
        return data


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    first = text.splitlines()[0].split(" This is step ")[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of an error, and of its root cause when there is one."""
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    return _line(exc) if root is exc else f"{_line(exc)} (cause: {_line(root)})"


def _check_args(
    model: object, example_input: object, path: object, fmt: object, opset: object, rtol: object
) -> Path:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if example_input.ndim < 1 or example_input.shape[0] < 1:
        raise ValueError(
            f"example_input must be a batch (N, ...) with N >= 1, got shape {tuple(example_input.shape)}"
        )
    if not example_input.is_floating_point():
        raise TypeError(f"example_input must be a floating-point tensor, got {example_input.dtype}")
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a file path (str or Path), got {path!r}")
    check_choice(fmt, FORMATS, name="format")
    check_positive_int(opset, name="opset")
    if opset < MIN_OPSET:  # type: ignore[operator]
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0:
        raise ValueError(f"rtol must be a number > 0, got {rtol!r}")
    return Path(path)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``with eval_mode(model):`` eval mode inside, every submodule's own train/eval flag
    restored on exit (a model trained with frozen BatchNorm layers keeps them frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _outputs(value: object) -> list[torch.Tensor]:
    """A model's output as a list of tensors (a tensor, or a tuple/list of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return list(value)
    raise TypeError(
        f"the model must return a tensor or a tuple of tensors to be exported, got {type(value).__name__}"
    )


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1)


def _export_onnx(
    model: nn.Module, example: torch.Tensor, tmp: Path, *, dynamic_batch: bool, opset: int,
    num_outputs: int,
) -> tuple[str, str | None]:
    """Write ONNX to ``tmp``: the dynamo exporter, else the TorchScript one.

    Returns:
        (exporter, the dynamo exporter's error when it fell back, else None).
    """
    output_names = ["output"] if num_outputs == 1 else [f"output{i}" for i in range(num_outputs)]
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=["input"],
                output_names=output_names,
                dynamic_shapes=({0: _batch_dim()},) if dynamic_batch else None,
                verbose=False,
            )
            if program is None:  # pragma: no cover - the dynamo exporter returns a program
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(tmp), external_data=False)
        return "dynamo", None
    except Exception as exc:  # the dynamo exporter raises many types; fall back, keep the reason
        reason = _first_line(exc)
    axes = {name: {0: "batch"} for name in ["input", *output_names]} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=["input"], output_names=output_names, dynamic_axes=axes,
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed with both exporters: dynamo: {reason}; TorchScript: {_first_line(exc)}"
        ) from exc
    return "torchscript", reason


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints (they write to stdout)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _onnx_runner(path: Path) -> tuple[Callable[[torch.Tensor], list[torch.Tensor]], str]:
    ort = require("onnxruntime", extra="export", purpose="checking an ONNX export")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.from_numpy(o) for o in session.run(None, {name: x.detach().cpu().numpy()})]

    return run, f"onnxruntime {ort.__version__}"


def onnx_pool_ops(path: str | Path) -> tuple[dict[str, int], list[str], int]:
    """Global-pooling ops of an ONNX file, the nodes that pool the non-portable way, the opset.

    Returns:
        ``(counts, bad, opset)``: ReduceMean/ReduceMax/GlobalAveragePool/GlobalMaxPool
        counts; a description of every node that is an adaptive pool, an ATen fallback,
        or an AveragePool/MaxPool whose window is its whole (statically known) spatial
        input; and the default-domain opset the file declares.
    """
    onnx = require("onnx", extra="export", purpose="inspecting an ONNX graph")
    proto = onnx.load(str(path))
    opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - shapes are a bonus for the window check
        pass
    shapes: dict[str, list[int | None]] = {}
    for info in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    counts: Counter[str] = Counter()
    bad: list[str] = []
    for node in _all_nodes(proto.graph):
        op = node.op_type
        if op in GLOBAL_POOL_OPS:
            counts[op] += 1
        label = f"{op} ({node.name or 'unnamed'})"
        if "adaptive" in op.lower() or op == "ATen" or "aten" in node.domain.lower():
            bad.append(label)
        elif op in ("AveragePool", "MaxPool"):
            kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
            spatial = shapes.get(node.input[0], [])[2:]
            if kernel and spatial and len(kernel) == len(spatial) and kernel == spatial and any(
                k > 1 for k in kernel
            ):
                bad.append(f"{label} with window {kernel} = the whole input")
    return dict(counts), bad, opset


def _all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:  # subgraphs (If/Loop bodies)
            if attr.g is not None and len(attr.g.node):
                yield from _all_nodes(attr.g)


def _export_program(model: nn.Module, example: torch.Tensor, tmp: Path, *, dynamic_batch: bool) -> None:
    try:
        program = torch.export.export(
            model, (example,), dynamic_shapes=({0: _batch_dim()},) if dynamic_batch else None
        )
        torch.export.save(program, str(tmp))
    except Exception as exc:
        raise ExportError(f"torch.export failed: {_first_line(exc)}") from exc


def _export_torchscript(model: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the parity check decides
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still asked for
            traced = torch.jit.trace(model, (example,), check_trace=False)
            torch.jit.save(traced, str(tmp))
    except Exception as exc:
        raise ExportError(f"TorchScript tracing failed: {_first_line(exc)}") from exc


def _runner(fmt: str, path: Path, device: torch.device) -> tuple[Callable[[torch.Tensor], list[torch.Tensor]], str]:
    """A function running the saved artefact, and what runs it."""
    if fmt == "onnx":
        return _onnx_runner(path)
    if fmt == "exported-program":
        module = torch.export.load(str(path)).module()
        return (lambda x: _outputs(module(x))), "torch.export.load"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        script = torch.jit.load(str(path), map_location=device)
    return (lambda x: _outputs(script(x))), "torch.jit.load"


def _errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[float, float]:
    if len(got) != len(want):
        raise ExportError(f"the artefact returns {len(got)} outputs, the eager model {len(want)}")
    max_abs = max_rel = 0.0
    for g, w in zip(got, want):
        if tuple(g.shape) != tuple(w.shape):
            raise ExportError(
                f"the artefact returns shape {tuple(g.shape)}, the eager model {tuple(w.shape)}"
            )
        w64, g64 = w.detach().double().cpu(), g.detach().double().cpu()
        err = float((g64 - w64).abs().max()) if w64.numel() else 0.0
        scale = float(w64.abs().max()) if w64.numel() else 0.0
        rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
        if math.isnan(err) or math.isnan(rel):  # NaN anywhere: fail the check
            err = rel = float("inf")
        max_abs, max_rel = max(max_abs, err), max(max_rel, rel)
    return max_abs, max_rel


def _temp_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # same folder (os.replace stays atomic); same suffix (torch.export.save wants .pt2)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def export(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | Path,
    *,
    format: str = "onnx",
    dynamic_batch: bool = True,
    opset: int = MIN_OPSET,
    rtol: float = 1e-4,
    overwrite: bool = False,
) -> ExportReport:
    """Export ``model`` to ``path`` and check the artefact against the eager model.

    Args:
        model: the network; it is exported in eval mode (its train/eval flags are
            restored afterwards). It must return a tensor or a tuple of tensors.
        example_input: a floating-point batch (N, C, *spatial) the exporter traces with.
            With ``dynamic_batch`` a batch of 1 is repeated to 2 for tracing (exporters
            specialise size-1 dimensions).
        path: the file to write (missing folders are created).
        format: "onnx", "exported-program" or "torchscript".
        dynamic_batch: make the batch dimension dynamic, and check on a different batch.
        opset: ONNX opset, >= 18.
        rtol: the parity tolerance on ``max_rel_err`` (1e-4 suits float32).
        overwrite: replace an existing ``path``; by default an existing file is an error.

    Returns:
        The :class:`ExportReport` (also when ``format`` needs no ONNX extras).

    Raises:
        TypeError, ValueError: a bad argument (named in the message), or an example the
            model cannot run on.
        ExciteError: ``path`` exists and ``overwrite`` is False.
        MissingDependencyError: ONNX without the ``export`` extra (onnx, onnxscript,
            onnxruntime); the message gives the install command.
        ExportError: the exporter failed, the ONNX graph pools the non-portable way, or
            the parity check failed (``error.report`` holds the numbers); ``path`` is
            left as it was.
    """
    path = _check_args(model, example_input, path, format, opset, rtol)
    check_bool(dynamic_batch, name="dynamic_batch")
    check_bool(overwrite, name="overwrite")
    if path.exists() and not overwrite:
        raise ExciteError(f"{path} already exists; choose another path or pass overwrite=True (--overwrite)")
    if format == "onnx":  # fail before the slow part when the extra is missing
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, extra="export", purpose="ONNX export")
    example = example_input.detach()
    if dynamic_batch and example.shape[0] == 1:
        example = torch.cat([example, example])
    device = next((p.device for p in model.parameters()), example.device)
    example = example.to(device)
    tmp = _temp_path(path)
    try:
        with eval_mode(model):
            with torch.no_grad():
                try:
                    num_outputs = len(_outputs(model(example)))
                except RuntimeError as exc:  # e.g. an input too small or of the wrong channels
                    raise ValueError(f"the model cannot run on example_input of shape "
                                     f"{tuple(example_input.shape)}: {_line(exc)}") from exc
            exporter, reason, opset_used = _write(model, example, tmp, format, dynamic_batch, opset,
                                                  num_outputs)
            pool_ops: dict[str, int] = {}
            if format == "onnx":
                pool_ops, bad, opset_used = onnx_pool_ops(tmp)
                if bad:
                    raise ExportError(
                        "the ONNX graph pools the non-portable way (use mean/amax over the "
                        f"spatial axes): {', '.join(bad)}"
                    )
            batch = example.shape[0] + 1 if dynamic_batch else example.shape[0]
            # fixed seed, own generator: reproducible numbers, the caller's RNG untouched
            gen = torch.Generator().manual_seed(0)
            check = torch.randn((batch, *example.shape[1:]), generator=gen, dtype=example.dtype).to(device)
            with torch.no_grad():
                want = _outputs(model(check))
                run, runtime = _runner(format, tmp, check.device)
                got = run(check.cpu() if format == "onnx" else check)
        max_abs, max_rel = _errors(got, want)
        report = ExportReport(
            path=path, format=format, exporter=exporter, opset=opset_used, fallback_reason=reason,
            dynamic_batch=dynamic_batch, example_shape=tuple(example.shape),
            check_shape=tuple(check.shape), max_abs_err=max_abs, max_rel_err=max_rel,
            rtol=float(rtol), runtime=runtime, pool_ops=pool_ops, file_bytes=tmp.stat().st_size,
        )
        if not report.passed:
            raise ExportError(f"{format} export of {path.name} does not match the model: "
                              f"{report.parity_line()}", report)
        os.replace(tmp, path)
        return report
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(
    model: nn.Module, example: torch.Tensor, tmp: Path, fmt: str, dynamic_batch: bool, opset: int,
    num_outputs: int,
) -> tuple[str, str | None, int | None]:
    """Write the artefact; returns (exporter, fallback reason, opset or None)."""
    if fmt == "onnx":
        exporter, reason = _export_onnx(model, example, tmp, dynamic_batch=dynamic_batch,
                                        opset=opset, num_outputs=num_outputs)
        return exporter, reason, opset
    if fmt == "exported-program":
        _export_program(model, example, tmp, dynamic_batch=dynamic_batch)
        return "torch.export", None, None
    _export_torchscript(model, example, tmp)
    return "jit.trace", None, None
