"""Every attention family at 1D/2D/3D and every registered model export and match eager.

The families are exported together, behind one input, so the matrix costs one export per
format: ``Zoo`` holds every registered family at every rank (its weights randomised, so a
zero-initialised branch cannot hide a wrong export) and returns one output per
(family, rank). When the combined export fails, each family is exported on its own to
name the ones that fail. The full matrix one family and one model at a time, in every
format, is ``python -m benchmarks.export_matrix`` (docs/export.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import excite
from excite.exporting import SUFFIXES, ExportError, export
from excite.models import model_info

CHANNELS, SIZE = 16, 6
FORMATS = ("onnx", "exported-program", "torchscript")
ONNX = ("onnx", "onnxscript", "onnxruntime")


def _needs(fmt: str) -> None:
    if fmt == "onnx":
        for module in ONNX:
            pytest.importorskip(module, reason="the export extra (onnx, onnxscript, onnxruntime)")


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics (zero-initialised gates would be no-ops)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return module.eval()


def _views(x: torch.Tensor) -> dict[int, torch.Tensor]:
    """(N, C, S, S, S) -> one input per rank: the volume, its first slice, its first row."""
    return {3: x, 2: x[:, :, 0], 1: x[:, :, 0, 0]}


class Zoo(nn.Module):
    """Every (family, rank) in ``keys`` on the matching view of one (N, C, S, S, S) input."""

    def __init__(self, keys: list[tuple[str, int]]) -> None:
        super().__init__()
        self.keys = keys
        self.blocks = nn.ModuleList(
            [excite.create_attention(n, CHANNELS, spatial_dims=r) for n, r in keys]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        views = _views(x)
        return tuple(block(views[r]) for block, (_, r) in zip(self.blocks, self.keys))


class One(nn.Module):
    """One (family, rank) on its view of the (N, C, S, S, S) input."""

    def __init__(self, block: nn.Module, rank: int) -> None:
        super().__init__()
        self.block, self.rank = block, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(_views(x)[self.rank])


def _example() -> torch.Tensor:
    return torch.randn(2, CHANNELS, SIZE, SIZE, SIZE)


def _keys() -> list[tuple[str, int]]:
    return [(name, rank) for name in excite.list_attention() for rank in (1, 2, 3)]


def _diagnose(fmt: str, keys: list[tuple[str, int]], tmp_path: Path) -> list[str]:
    """Export each (family, rank) alone; describe the ones that fail."""
    failures = []
    for i, (name, rank) in enumerate(keys):
        try:
            block = randomize(excite.create_attention(name, CHANNELS, spatial_dims=rank))
            export(One(block, rank), _example(), tmp_path / f"one{i}{SUFFIXES[fmt]}", format=fmt)
        except Exception as exc:  # noqa: BLE001 - every failure is reported by name
            failures.append(f"{name} at {rank}D: {type(exc).__name__}: {str(exc)[:300]}")
    return failures


def test_every_family_builds_at_every_rank() -> None:
    failures = []
    for name, rank in _keys():
        try:
            excite.create_attention(name, CHANNELS, spatial_dims=rank)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{name} at {rank}D: {exc}")
    assert not failures, "attention families that do not build:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_attention_family_exports_at_every_rank(fmt: str, tmp_path: Path) -> None:
    _needs(fmt)
    keys = _keys()
    zoo = randomize(Zoo(keys))
    path = tmp_path / f"zoo{SUFFIXES[fmt]}"
    try:
        report = export(zoo, _example(), path, format=fmt)
    except Exception as exc:  # noqa: BLE001 - name the families that fail, then fail
        failures = _diagnose(fmt, keys, tmp_path)
        pytest.fail(f"{fmt} export of every family failed ({type(exc).__name__}: {str(exc)[:300]}); "
                    "families failing on their own:\n" + ("\n".join(failures) or "(none)"))
    assert report.passed and report.max_rel_err <= 1e-4, report.parity_line()
    assert report.check_shape[0] == 3 and report.example_shape[0] == 2  # another batch size
    assert path.is_file() and path.stat().st_size == report.file_bytes > 0
    if fmt == "onnx":
        # global pooling of SE, CBAM, ... is there, and only in its portable forms
        assert report.pool_ops.get("ReduceMean", 0) + report.pool_ops.get("GlobalAveragePool", 0) > 0
        assert set(report.pool_ops) <= {"ReduceMean", "ReduceMax", "GlobalAveragePool", "GlobalMaxPool"}
        assert report.opset is not None and report.opset >= 18


def _model_input(name: str) -> torch.Tensor:
    rank = model_info(name).default_spatial_dims
    return torch.randn(2, 3, *{1: (64,), 2: (32, 32), 3: (4, 32, 32)}[rank])


@pytest.mark.slow
@pytest.mark.parametrize("name", excite.list_models())
def test_every_model_exports_as_an_exported_program(name: str, tmp_path: Path) -> None:
    model = excite.create_model(name, num_classes=5).eval()
    x = _model_input(name)
    report = export(model, x, tmp_path / "model.pt2", format="exported-program")
    assert report.passed, report.parity_line()
    loaded = torch.export.load(str(tmp_path / "model.pt2")).module()
    y = torch.randn(4, *x.shape[1:])
    with torch.no_grad():  # the saved program takes yet another batch size
        torch.testing.assert_close(loaded(y), model(y), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rank", "attention"), [
    ("tiny_resnet", 1, "cbam"), ("tiny_resnet", 2, "se"), ("tiny_resnet", 3, "cbam"), ("x3d_xs", 3, None),
])
def test_models_export_to_onnx_with_the_dynamo_exporter(name: str, rank: int, attention: str | None,
                                                        tmp_path: Path) -> None:
    _needs("onnx")
    import onnxruntime

    options = {} if attention is None else {"attention": attention}
    model = excite.create_model(name, num_classes=5, spatial_dims=rank, **options).eval()
    x = torch.randn(2, 3, *{1: (64,), 2: (32, 32), 3: (4, 32, 32)}[rank])
    report = export(model, x, tmp_path / "m.onnx", format="onnx")
    assert report.exporter == "dynamo" and report.fallback_reason is None
    assert report.passed, report.parity_line()
    # the model's global average pool (and SE/CBAM's) became ReduceMean, not an adaptive pool
    assert report.pool_ops.get("ReduceMean", 0) >= 2
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    y = torch.randn(5, *x.shape[1:])
    (got,) = session.run(None, {session.get_inputs()[0].name: y.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(y), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_video_model_exports_to_torchscript(tmp_path: Path) -> None:
    model = excite.create_model("r2plus1d_18", attention="cbam", num_classes=5).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    report = export(model, x, tmp_path / "m.pt", format="torchscript")
    assert report.passed and report.exporter == "jit.trace", report.parity_line()
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    y = torch.randn(3, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(y), model(y), rtol=1e-4, atol=1e-5)


def test_diagnosis_names_a_failing_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the combined export fails, the matrix names each family that fails alone."""

    def broken(*args, **kwargs):
        raise ExportError("TorchScript tracing failed: broken on purpose")

    monkeypatch.setattr("excite.exporting._export_torchscript", broken)
    failures = _diagnose("torchscript", [("se", 2), ("sam", 1)], tmp_path)
    assert [f.split(":")[0] for f in failures] == ["se at 2D", "sam at 1D"]
    assert "broken on purpose" in failures[0]
