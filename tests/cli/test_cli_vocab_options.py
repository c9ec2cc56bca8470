"""One KEY=VALUE parser (excite.cli.options) behind --data-option, --model-option and
--attention-option on every subcommand: YAML values, one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from excite.cli import build_parser, main
from excite.cli.options import option_dict, parse_key_value, parse_value


@pytest.mark.parametrize(("text", "expected"), [
    ("8", 8),
    ("-3", -3),
    ("0.5", 0.5),
    ("1e-3", 0.001),  # YAML 1.1 (PyYAML) would keep this a string
    ("2E5", 200000.0),
    ("1.5e2", 150.0),
    ("true", True),
    ("False", False),
    ("[3, 7, 7]", [3, 7, 7]),
    ("[avg, max]", ["avg", "max"]),
    ("{a: 1}", {"a": 1}),
    ("official", "official"),
    ("up,down", "up,down"),
    ("64x64", "64x64"),
    ("'[x'", "[x"),  # quoted: a string
    ("'8'", "8"),
    ("", None),
    ("null", None),
])
def test_values_parse_as_yaml(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_infinite_and_nan_floats():
    assert parse_value(".inf") == math.inf and math.isnan(parse_value(".nan"))


@pytest.mark.parametrize(("text", "expected"), [
    ("reduction=16", ("reduction", 16)),
    ("stride-in-1x1=true", ("stride_in_1x1", True)),  # dashes become underscores
    (" kernel_size =[3,7,7]", ("kernel_size", [3, 7, 7])),
    ("name=a=b", ("name", "a=b")),  # only the first '=' splits
    ("val_size=", ("val_size", None)),
])
def test_key_value(text, expected):
    assert parse_key_value(text) == expected


@pytest.mark.parametrize(("text", "needle"), [
    ("reduction", "expected KEY=VALUE, got 'reduction'"),
    ("=3", "expected KEY=VALUE, got '=3'"),
    # positions count in the value: "[3, 7" ends (column 6) before its "]"
    ("kernel_size=[3, 7", "kernel_size=[3, 7: the value is not valid YAML at line 1, column 6: "),
    ("variant=\"official", "variant=\"official: the value is not valid YAML at line 1, column 10: "),
    ("x=*alias", "x=*alias: the value is not valid YAML at line 1, column 1: "),
])
def test_bad_pairs_are_one_line_value_errors(text, needle):
    with pytest.raises(ValueError) as info:
        parse_key_value(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_later_key_wins():
    assert option_dict([("a", 1), ("b", 2), ("a", 3)]) == {"a": 3, "b": 2}
    assert option_dict(None) == {}


@pytest.mark.parametrize(("argv", "dest"), [
    (["train", "--data-option", "train-size=1e3"], "data_option"),
    (["train", "--model-option", "train-size=1e3"], "model_option"),
    (["train", "--attention-option", "train-size=1e3"], "attention_option"),
    (["compare", "--model-option", "train-size=1e3"], "model_option"),
    (["eval", "runs/x", "--data-option", "train-size=1e3"], "data_option"),
    (["profile", "resnet18", "--model-option", "train-size=1e3"], "model_option"),
    (["profile", "resnet18", "--attention-option", "train-size=1e3"], "attention_option"),
])
def test_every_subcommand_parses_options_the_same_way(argv, dest):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == [("train_size", 1000.0)]


def _error(argv: list[str], capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize("flag", ["--data-option", "--model-option", "--attention-option"])
def test_yaml_syntax_error_in_a_value_is_one_line_naming_the_flag(capsys, command, flag):
    err = _error([command, flag, "size=[64, 64", "--epochs", "1"], capsys)
    assert err.startswith(f"excite {command}: error: argument {flag}: size=[64, 64: the value is not "
                          "valid YAML at line 1, column 8: ")
    assert "quote it: size=\"'[64, 64'\"" in err


@pytest.mark.parametrize(("option", "needle"), [
    (["--data-option", "train_size=[1, 2]"], "train_size"),
    (["--data-option", "frames=1.5"], "frames"),
    (["--data-option", "size=[1, 2, 3]"], "size"),
    (["--data-option", "bogus=1"], "bogus"),
    (["--model-option", "base_width=[64]"], "base_width"),
    (["--attention-option", "reduction=abc"], "reduction"),
    (["--attention-option", "kernel_size={a: 1}"], "kernel_size"),
])
def test_yaml_values_of_the_wrong_type_are_one_line_errors(tmp_path: Path, capsys, option, needle):
    err = _error(["train", *option, "--model", "tiny_resnet", "--epochs", "1", "--quiet",
                  "--out", str(tmp_path / "runs")], capsys)
    assert err.startswith("excite train: error: ") and needle in err
    assert not any((tmp_path / "runs").rglob("*.safetensors"))  # rejected before training
