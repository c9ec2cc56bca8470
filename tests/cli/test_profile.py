"""`excite profile` end to end through excite.cli.main (and once as a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from excite.cli import main


def _run(capsys, argv: list[str]) -> str:
    code = main(["profile", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_prints_the_published_resnet50_cbam_numbers(capsys):
    out = _run(capsys, ["resnet50", "--attention", "cbam", "--attention-arg", "variant=official",
                        "--model-arg", "stride_in_1x1=true"])
    assert "28,089,624" in out  # CBAM paper, ResNet-50 + CBAM
    assert "(3.8644 G)" in out


def test_json_output_for_a_video_model(capsys):
    data = json.loads(_run(capsys, ["r3d_18", "--input", "3x16x112x112", "--json"]))
    assert data["params"] == 33_371_472 and data["num_classes"] == 400
    assert round(data["macs"] / 1e9, 3) == 40.697
    assert data["input_shape"] == [1, 3, 16, 112, 112]
    assert "layers" not in data


def test_per_layer_table_and_num_classes(capsys):
    out = _run(capsys, ["tiny_resnet", "--input", "1x16x64x64", "--num-classes", "5",
                        "--per-layer", "--attention", "eca"])
    assert "layer1.0.conv1" in out and "Conv3d" in out
    assert "output            1x5" in out


def test_spatial_dims_default_input(capsys):
    out = _run(capsys, ["resnet18", "--spatial-dims", "1"])
    assert "input             1x3x4096" in out


def test_list(capsys):
    out = _run(capsys, ["--list"])
    assert "r2plus1d_18" in out and "tiny_resnet" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["resnet51"], "unknown model 'resnet51'"),
    (["r3d_18", "--input", "3x224x224"], "spatial_dims"),
    (["resnet18", "--input", "3xtallx5"], "--input"),
    (["resnet18", "--model-arg", "stride_in_1x1"], "KEY=VALUE"),
    (["resnet18", "--attention", "bogus"], "bogus"),
    (["tiny_resnet", "--input", "1x8x32x32"], "batch size >= 2"),
    ([], "model name"),
])
def test_errors_are_one_line_exit_2(capsys, argv, needle):
    code = main(["profile", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "Traceback" not in err
    assert needle in err


def test_console_script_runs():
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "excite", "profile", "resnet20", "--num-classes", "10",
         "--json"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"] == 269_722  # He et al.: 0.27 M
