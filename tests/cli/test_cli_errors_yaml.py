"""A --config file that is not valid YAML is one line naming the file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from excite.cli import main
from excite.errors import describe_yaml_error

yaml = pytest.importorskip("yaml")

# (file text, line, column, problem): positions counted by hand, 1-based
BAD = [
    ("epochs: [1\nlr: 2\n", 2, 3, "expected ',' or ']', but got ':'"),
    ("epochs: 1\nattention: se: cbam\n", 2, 14, "mapping values are not allowed here"),
    ('data: "fashion-mnist\n', 2, 1, "found unexpected end of stream"),
    ("model: *tiny\n", 1, 8, "found undefined alias 'tiny'"),
    ("data_options:\n\ttrain_size: 8\n", 2, 1, "found character '\\t' that cannot start any token"),
]


@pytest.mark.parametrize(("text", "line", "column", "problem"), BAD)
def test_describe_yaml_error(text, line, column, problem):
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load(text)
    message = describe_yaml_error(info.value)
    assert message.startswith(f"line {line}, column {column}: {problem}")
    assert "\n" not in message and "^" not in message


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize(("text", "line", "column", "problem"), BAD[:2])
def test_config_syntax_error_is_one_line(tmp_path: Path, capsys, command, text, line, column, problem):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main([command, "--config", str(config), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(
        f"excite {command}: error: config file {config} is not valid YAML: line {line}, column {column}: {problem}"
    )
    assert not (tmp_path / "runs").exists()


def test_the_context_keeps_its_own_position():
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load("epochs: [1\nlr: 2\n")
    assert describe_yaml_error(info.value) == (
        "line 2, column 3: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 1, column 9)"
    )


def test_an_error_without_a_position_is_its_message_on_one_line():
    assert describe_yaml_error(yaml.YAMLError("bad\n  thing")) == "bad thing"
