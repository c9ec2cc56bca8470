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
    out = _run(capsys, ["resnet50", "--attention", "cbam", "--attention-option", "variant=official",
                        "--model-option", "stride_in_1x1=true"])
    assert "28,089,624" in out  # CBAM paper, ResNet-50 + CBAM
    assert "(3.8644 G)" in out


def test_attention_name_is_case_insensitive_like_create_attention(capsys):
    import excite

    out = _run(capsys, ["resnet50", "--attention", "CBAM", "--attention-option", "variant=official",
                        "--model-option", "stride-in-1x1=true", "--json"])
    data = json.loads(out)
    assert data["params"] == 28_089_624  # CBAM paper, ResNet-50 + CBAM
    assert data["attention"] == "cbam" == excite.layers.attention_factory("CBAM").name
    assert data["model_kwargs"] == {"stride_in_1x1": True}


def test_old_arg_spellings_still_work_with_one_line_deprecation_warning(capsys):
    code = main(["profile", "resnet50", "--attention", "cbam", "--attention-arg", "variant=official",
                 "--model-arg", "stride_in_1x1=true", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["params"] == 28_089_624
    assert out.err.splitlines() == [
        "excite profile: warning: --attention-arg is deprecated; use --attention-option",
        "excite profile: warning: --model-arg is deprecated; use --model-option",
    ]


def test_old_arg_spellings_are_hidden_from_help(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    out = capsys.readouterr().out
    assert "--model-option" in out and "--attention-option" in out
    assert "--model-arg" not in out and "--attention-arg" not in out


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
    (["resnet18", "--model-option", "stride_in_1x1"], "KEY=VALUE"),
    (["resnet18", "--model-option", "=1"], "KEY=VALUE"),
    (["resnet18", "--model-option", "stride_in_1x1=[true"], "--model-option"),
    (["resnet18", "--batch-size", "0"], "--batch-size"),
    (["resnet18", "--per"], "unrecognized arguments: --per"),  # no abbreviations
    (["resnet18", "--attention", "bogus"], "bogus"),
    (["tiny_resnet", "--input", "1x8x32x32"], "batch size >= 2"),
    ([], "model name"),
])
def test_errors_are_one_line_exit_2(capsys, argv, needle):
    try:
        code = main(["profile", *argv])
    except SystemExit as exc:  # usage errors exit from argparse
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "Traceback" not in err
    assert needle in err


def test_yaml_syntax_error_in_an_option_names_flag_line_and_column(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile", "resnet18", "--attention", "cbam", "--attention-option", "kernel_size=[7, 7"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    # "[7, 7" ends (column 6) before its "]": the flag, the text, the position
    assert err.startswith("excite profile: error: argument --attention-option: kernel_size=[7, 7: ")
    assert "the value is not valid YAML at line 1, column 6: " in err


def test_output_into_a_closed_pipe_exits_quietly():
    """`excite profile ... | head -0`: no traceback, no 'Exception ignored' at exit."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, "-m", "excite", "profile", "resnet20", "--num-classes", "10", "--per-layer"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    proc.stdout.close()  # the reader goes away before the first line is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as `yes | head` reports
    assert err == ""


def test_console_script_runs():
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "excite", "profile", "resnet20", "--num-classes", "10",
         "--json"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"] == 269_722  # He et al.: 0.27 M
