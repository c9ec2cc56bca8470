"""One CLI vocabulary: the same option flags on every subcommand that builds a model, no
abbreviated flags, help text and defaults for every flag, one-line usage errors."""

from __future__ import annotations

import argparse
import io

import pytest

from excite.cli import build_parser, main


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"excite": parser, **sub.choices}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one line, no usage block
    return err.strip()


def test_every_parser_refuses_abbreviations():
    for name, parser in _commands().items():
        assert parser.allow_abbrev is False, name


@pytest.mark.parametrize(("argv", "flag"), [
    (["train", "--epoch", "1", "--config", "missing.yaml"], "--epoch"),  # --epochs
    (["compare", "--seed", "1", "--see", "2", "--config", "missing.yaml"], "--see"),  # --seeds
    (["profile", "resnet18", "--per"], "--per"),  # --per-layer
    (["eval", "runs/x", "--check", "last"], "--check"),  # --checkpoint
    (["--vers"], "--vers"),  # --version
])
def test_abbreviated_flags_are_unrecognised(capsys, argv, flag):
    err = _usage_error(argv, capsys)
    assert f"unrecognized arguments: {flag}" in err


@pytest.mark.parametrize("command", ["train", "compare", "profile"])
def test_model_building_commands_take_model_and_attention_options(command):
    flags = _flags(_commands()[command])
    assert {"--model-option", "--attention-option"} <= flags


@pytest.mark.parametrize("command", ["train", "compare", "eval"])
def test_data_commands_take_data_options(command):
    assert "--data-option" in _flags(_commands()[command])


def test_no_command_shows_an_arg_spelling():
    for name, parser in _commands().items():
        visible = {f for a in parser._actions if a.help != argparse.SUPPRESS for f in a.option_strings}
        assert not {f for f in visible if f.endswith("-arg")}, name


def test_old_profile_spellings_are_hidden():
    profile = _commands()["profile"]
    hidden = {flag for a in profile._actions if a.help == argparse.SUPPRESS for flag in a.option_strings}
    assert hidden == {"--model-arg", "--attention-arg"}
    assert "--model-arg" not in profile.format_help()


@pytest.mark.parametrize("command", ["profile", "datasets", "bench"])
def test_every_flag_has_help_and_help_shows_defaults(command):
    parser = _commands()[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, (command, action.dest)
        if action.required or action.default is False:  # a required positional; a switch
            continue
        shown = " ".join(action.help.split())
        assert "default" in shown or f"{shown} (default: {action.default})" in text, (command, action.dest)


def test_help_shows_given_defaults_in_the_text(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    assert "batch size N (default: 1)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv", [
    ["nope"],
    ["profile", "--bogus"],
    ["datasets", "a", "b"],
    ["bench"],
    ["train", "--epochs", "two"],
    ["train", "--data-option", "noequals"],
])
def test_usage_errors_are_one_line(capsys, argv):
    err = _usage_error(argv, capsys)
    assert err.startswith("excite") and ": error: " in err and "--help`)" in err


def test_a_multi_line_error_message_is_printed_on_one_line(capsys, monkeypatch):
    import excite.cli.datasets as datasets

    def fail(args):
        raise ValueError("Error(s) in loading:\n\tMissing key(s): 'a'.\n\tUnexpected key(s): 'b'.")

    monkeypatch.setattr(datasets, "run", fail)
    assert main(["datasets"]) == 2
    assert capsys.readouterr().err == (
        "excite datasets: error: Error(s) in loading: Missing key(s): 'a'. Unexpected key(s): 'b'.\n"
    )


class _ClosedPipe(io.TextIOBase):
    """stdout whose reader has gone (``| head``): every write and flush fails."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("argv", [["datasets"], ["datasets", "moving-shapes"], ["--help"]])
def test_a_closed_pipe_ends_any_command_quietly(capsys, monkeypatch, argv):
    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    assert main(argv) == 141  # 128 + SIGPIPE
    assert capsys.readouterr().err == ""
