"""`excite export RUN_DIR|MODEL` end to end, and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import excite
from excite.cli import main
from excite.cli.export import FORMATS as CLI_FORMATS
from excite.exporting import FORMATS


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run argv, expect exit 2 and exactly one line on stderr; return it."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_formats_are_the_librarys() -> None:
    assert CLI_FORMATS == FORMATS


@pytest.mark.slow
def test_export_a_run_to_onnx(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the export extra")
    pytest.importorskip("onnxscript", reason="the export extra")
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    assert main(["export", str(run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert f"exported {run / 'best.onnx'} (onnx, " in out
    # the run's own input shape (1x4x16x16), batch 2 traced, checked on batch 3
    assert "parity (onnxruntime" in out and "input 3x1x4x16x16 vs example 2x1x4x16x16" in out
    assert out.strip().endswith(": ok")
    # the file computes what the run's best weights compute, on yet another batch
    model, _ = excite.load_run(run)
    x = torch.randn(5, 1, 4, 16, 16)
    session = ort.InferenceSession(str(run / "best.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)
    # a second export does not replace the first without --overwrite
    err = _error(capsys, ["export", str(run), "--format", "onnx"])
    assert "already exists" in err and "--overwrite" in err


def test_export_a_run_in_the_other_formats(tiny_run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "last.pt"
    assert main(["export", str(tiny_run), "--format", "torchscript", "--checkpoint", "last",
                 "--out", str(out), "--input-shape", "1,6,24,24", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["format"] == "torchscript"
    assert report["example_shape"] == [2, 1, 6, 24, 24] and report["check_shape"] == [3, 1, 6, 24, 24]
    model, _ = excite.load_run(tiny_run, checkpoint="last")
    x = torch.randn(2, 1, 6, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), model(x), rtol=1e-4, atol=1e-5)


def test_export_a_model_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "net.pt"
    assert main(["export", "tiny_resnet", "--input-shape", "2,64", "--attention", "eca",
                 "--num-classes", "3", "--format", "torchscript", "--out", str(out),
                 "--static-batch", "--batch-size", "4"]) == 0
    text = capsys.readouterr().out
    assert "static batch" in text and "input 4x2x64 vs example 4x2x64" in text
    assert torch.jit.load(str(out))(torch.randn(4, 2, 64)).shape == (4, 3)


def test_export_errors_are_one_line(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # argparse: usage error, one line, exit 2
        main(["export", str(tiny_run), "--format", "tflite"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "invalid choice: 'tflite'" in err and "\n" not in err
    err = _error(capsys, ["export", str(tiny_run), "--input-shape", "1,16,16", "--out", str(tmp_path / "a.pt")])
    assert "does not fit the run's model" in err and "3 spatial axes" in err
    err = _error(capsys, ["export", "r3d_18", "--input-shape", "3,16,16", "--out", str(tmp_path / "b.pt")])
    assert "supports spatial_dims in (3,)" in err and "spatial_dims=2" in err
    assert "--input-shape is required" in _error(capsys, ["export", "resnet18", "--out", str(tmp_path / "c.pt")])
    assert "--out is required" in _error(capsys, ["export", "resnet18", "--input-shape", "3,32,32"])
    assert "must look like 3,224,224" in _error(
        capsys, ["export", "resnet18", "--input-shape", "3x32x32", "--out", str(tmp_path / "d.pt")])
    assert "neither a run directory nor a model name" in _error(capsys, ["export", str(tmp_path / "nope")])
    assert "applies to a model name" in _error(capsys, ["export", str(tiny_run), "--attention", "se"])
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / "best.safetensors").unlink()
    (run / "last.safetensors").unlink()
    err = _error(capsys, ["export", str(run), "--format", "torchscript"])
    assert "no best weights" in err and "never finished an epoch" in err
    assert not list(tmp_path.glob("*.pt"))
