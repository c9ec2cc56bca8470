"""excite.export: the parity check, its failures, the fallback exporter, bad arguments."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import excite
from excite.errors import ExciteError, MissingDependencyError
from excite.exporting import ExportError, ExportReport, onnx_pool_ops

ONNX = ("onnx", "onnxscript", "onnxruntime")


def _needs_onnx() -> None:
    for module in ONNX:
        pytest.importorskip(module, reason="the export extra (onnx, onnxscript, onnxruntime)")


class Drifts(nn.Module):
    """Eager output changes with every call (x * 1, x * 2, ...); an exported graph freezes
    the factor of the call it was traced in."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = itertools.count(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(next(self.calls))


class WholeWindowPool(nn.Module):
    """Global pooling spelled as a fixed window: the graph would only take one input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=(x.shape[2], x.shape[3]))


def _small() -> nn.Module:
    return excite.create_attention("cbam", 16, spatial_dims=2).eval()


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
def test_a_failing_parity_check_is_an_error_and_leaves_the_old_file(fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        _needs_onnx()
    path = tmp_path / "model.bin"
    path.write_bytes(b"the user's file")
    with pytest.raises(ExportError, match="does not match the model: parity .*FAILED") as info:
        excite.export(Drifts(), torch.randn(2, 3, 4), path, format=fmt, overwrite=True)
    report = info.value.report
    assert isinstance(report, ExportReport) and not report.passed
    # the artefact froze the traced call's factor j; eager runs call k > j: error (k - j) / k
    assert 0.2 < report.max_rel_err < 1.0
    assert path.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]  # no temp file left


def test_report_numbers_are_the_errors_on_a_fresh_batch(tmp_path: Path) -> None:
    model = _small()
    x = torch.randn(1, 16, 5, 5)
    report = excite.export(model, x, tmp_path / "m.pt", format="torchscript")
    assert report.example_shape == (2, 16, 5, 5)  # batch 1 is traced as 2 (dynamic batch)
    assert report.check_shape == (3, 16, 5, 5)
    assert report.passed and report.max_abs_err <= report.max_rel_err * 1e3
    assert "parity (torch.jit.load, input 3x16x5x5 vs example 2x16x5x5)" in report.parity_line()
    assert report.parity_line().endswith(": ok")
    static = excite.export(model, x, tmp_path / "s.pt", format="torchscript", dynamic_batch=False)
    assert static.check_shape == static.example_shape == (1, 16, 5, 5)
    data = report.to_dict()
    assert data["passed"] is True and data["path"] == str(tmp_path / "m.pt")


def test_export_keeps_the_callers_train_and_eval_flags(tmp_path: Path) -> None:
    model = excite.create_model("tiny_resnet", attention="se", num_classes=3, in_channels=1, spatial_dims=1)
    model.train()
    model.bn1.eval()  # a frozen BatchNorm stays frozen
    before = {name: m.training for name, m in model.named_modules()}
    excite.export(model, torch.randn(2, 1, 64), tmp_path / "m.pt", format="torchscript")
    assert {name: m.training for name, m in model.named_modules()} == before


def test_bad_arguments_name_the_argument(tmp_path: Path) -> None:
    model, x = _small(), torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match="format must be one of .*'onnx'.*got 'tflite'"):
        excite.export(model, x, tmp_path / "m", format="tflite")
    with pytest.raises(ValueError, match="opset must be >= 18, got 17"):
        excite.export(model, x, tmp_path / "m", opset=17)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        excite.export("cbam", x, tmp_path / "m")
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        excite.export(model, [1, 2], tmp_path / "m")
    with pytest.raises(TypeError, match="example_input must be a floating-point tensor"):
        excite.export(model, torch.ones(2, 16, 4, 4, dtype=torch.long), tmp_path / "m")
    conv = nn.Conv2d(16, 4, kernel_size=5)  # a 5x5 window does not fit a 4x4 input
    with pytest.raises(ValueError, match=r"cannot run on example_input of shape \(2, 16, 4, 4\): RuntimeError"):
        excite.export(conv, x, tmp_path / "m", format="torchscript")
    with pytest.raises(ValueError, match="rtol must be a number > 0"):
        excite.export(model, x, tmp_path / "m", rtol=0)
    (tmp_path / "taken.pt").write_bytes(b"mine")
    with pytest.raises(ExciteError, match="already exists.*--overwrite"):
        excite.export(model, x, tmp_path / "taken.pt", format="torchscript")
    assert (tmp_path / "taken.pt").read_bytes() == b"mine"


def test_onnx_falls_back_to_the_torchscript_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_onnx()
    real = torch.onnx.export

    def no_dynamo(*args, dynamo: bool = True, **kwargs):
        if dynamo:
            raise RuntimeError("dynamo cannot do this one\nsecond line")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    report = excite.export(_small(), torch.randn(2, 16, 6, 6), tmp_path / "m.onnx")
    assert report.exporter == "torchscript"
    assert report.fallback_reason == "RuntimeError: dynamo cannot do this one"
    assert report.passed and report.opset == 18
    assert "used the TorchScript exporter: RuntimeError: dynamo cannot do this one" in report.summary()


def test_onnx_pooling_must_be_portable(tmp_path: Path) -> None:
    _needs_onnx()
    with pytest.raises(ExportError, match=r"pools the non-portable way.*AveragePool .*window \[6, 6\]"):
        excite.export(WholeWindowPool(), torch.randn(2, 3, 6, 6), tmp_path / "w.onnx")
    assert not (tmp_path / "w.onnx").exists()
    # adaptive pooling to one value per channel exports as a reduction
    report = excite.export(nn.AdaptiveAvgPool2d(1), torch.randn(2, 3, 6, 6), tmp_path / "a.onnx")
    counts, bad, opset = onnx_pool_ops(tmp_path / "a.onnx")
    assert bad == [] and opset >= 18
    assert counts == report.pool_ops and set(counts) <= {"ReduceMean", "GlobalAveragePool"} and counts


def test_onnx_without_the_extra_gives_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingDependencyError, match=r"onnxruntime.*pip install .*excite\[export\]") as info:
        excite.export(_small(), torch.randn(2, 16, 4, 4), tmp_path / "m.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.onnx").exists()
