"""Every attention family at 1D/2D/3D and every model architecture export and match eager.

The families are exported together, behind one input, so the matrix costs one export per
format: ``Zoo`` holds every registered family at every rank (its weights randomised, so a
zero-initialised branch cannot hide a wrong export) and returns one output per
(family, rank). When the combined export fails, each family is exported on its own to
name the ones that fail. The models: one per architecture (deeper variants of the same
blocks, resnet34/101/152, x3d_s/m/l, ..., cost minutes and add no code path), each in one
format. The full matrix, one family and one model at a time, every registered model in
every format, is ``python -m benchmarks.export_matrix`` (docs/export.md).
"""

from __future__ import annotations

import functools
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


def _model_input(name: str, rank: int | None = None) -> torch.Tensor:
    rank = model_info(name).default_spatial_dims if rank is None else rank
    return torch.randn(2, 3, *{1: (64,), 2: (32, 32), 3: (4, 32, 32)}[rank])


def _architecture(model: nn.Module) -> tuple:
    """What a model is built from, ignoring depth and width: its classes and conv kinds."""
    convs = {(type(m).__name__, m.groups > 1, m.kernel_size) for m in model.modules()
             if isinstance(m, nn.modules.conv._ConvNd)}
    return (type(model).__name__, tuple(sorted({type(m).__name__ for m in model.modules()})),
            tuple(sorted(convs)))


@functools.lru_cache(maxsize=1)
def architectures() -> dict[tuple, list[str]]:
    """Registered models grouped by architecture, smallest first (resnet18 before
    resnet34 and wide_resnet18, resnet20 before resnet110)."""
    groups: dict[tuple, list[tuple[int, str]]] = {}
    for name in excite.list_models():
        with torch.device("meta"):  # no weights: only the structure is read
            model = excite.create_model(name, num_classes=5)
        size = sum(p.numel() for p in model.parameters())
        groups.setdefault(_architecture(model), []).append((size, name))
    return {key: [n for _, n in sorted(v)] for key, v in groups.items()}


# one model per architecture runs in the suite, in the format named here; every other
# architecture (and every model in every format) in benchmarks/export_matrix.py
ONNX_MODELS = [("tiny_resnet", 1, "se"), ("tiny_resnet", 3, "cbam"), ("x3d_xs", 3, None)]
TORCHSCRIPT_MODELS = [("tiny_resnet", 2, "cbam")]


@pytest.mark.slow
def test_every_model_architecture_exports(tmp_path: Path) -> None:
    """Each architecture's smallest registered model, in one format between this test
    (exported program, the models' own attention) and the ONNX / TorchScript tests below
    (with SE and CBAM)."""
    elsewhere = {name for name, _, _ in ONNX_MODELS + TORCHSCRIPT_MODELS}
    groups = architectures()
    assert sum(len(v) for v in groups.values()) == len(excite.list_models())
    failures = []
    for names in groups.values():
        if elsewhere & set(names):
            continue
        name = names[0]
        model = excite.create_model(name, num_classes=5).eval()
        x = _model_input(name)
        try:
            report = export(model, x, tmp_path / f"{name}.pt2", format="exported-program")
            assert report.passed, report.parity_line()
            loaded = torch.export.load(str(tmp_path / f"{name}.pt2")).module()
            y = torch.randn(4, *x.shape[1:])
            with torch.no_grad():  # the saved program takes yet another batch size
                torch.testing.assert_close(loaded(y), model(y), rtol=1e-4, atol=1e-5)
        except Exception as exc:  # noqa: BLE001 - report every failing model by name
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failures, "models that do not export:\n" + "\n".join(failures)


def test_architectures_group_depths_together() -> None:
    groups = {names[0]: names for names in architectures().values()}
    assert groups["resnet18"] == ["resnet18", "resnet34", "wide_resnet18"]
    assert groups["resnet20"] == ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
    assert {"resnet50", "resnext50_32x4d", "r3d_18", "mc3_18", "r2plus1d_18", "tiny_resnet"} <= set(groups)
    assert sorted(next(v for v in groups.values() if "x3d_l" in v)) == ["x3d_l", "x3d_m", "x3d_s", "x3d_xs"]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rank", "attention"), ONNX_MODELS)
def test_models_export_to_onnx_with_the_dynamo_exporter(name: str, rank: int, attention: str | None,
                                                        tmp_path: Path) -> None:
    _needs("onnx")
    import onnxruntime

    options = {} if attention is None else {"attention": attention}
    model = excite.create_model(name, num_classes=5, spatial_dims=rank, **options).eval()
    x = _model_input(name, rank)
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
@pytest.mark.parametrize(("name", "rank", "attention"), TORCHSCRIPT_MODELS)
def test_models_export_to_torchscript(name: str, rank: int, attention: str, tmp_path: Path) -> None:
    model = excite.create_model(name, attention=attention, num_classes=5, spatial_dims=rank).eval()
    x = _model_input(name, rank)
    report = export(model, x, tmp_path / "m.pt", format="torchscript")
    assert report.passed and report.exporter == "jit.trace", report.parity_line()
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    y = torch.randn(3, *x.shape[1:])
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
