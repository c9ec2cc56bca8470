"""One CLI vocabulary (issue 13, item 16): the training flags are generated from
TrainConfig (every field a flag with help and its default), --print-config, the
precedence defaults < --config < flags, and eval's --device/--*-option flags."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from excite.cli import build_parser, main
from excite.cli.train import build_config
from excite.engine.config import FIELD_DOCS, TrainConfig

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
OPTION_FLAGS = {"data_options": "--data-option", "model_kwargs": "--model-option",
                "attention_kwargs": "--attention-option"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flag(field: str) -> str:
    return OPTION_FLAGS.get(field, "--" + field.replace("_", "-"))


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings if a.help != argparse.SUPPRESS}


def test_every_config_field_is_documented_once():
    assert sorted(FIELD_DOCS) == sorted(FIELDS)
    assert all(doc.help and "\n" not in doc.help for doc in FIELD_DOCS.values())


@pytest.mark.parametrize(("command", "skipped"), [("train", set()), ("compare", {"attention", "name"})])
def test_every_field_is_a_flag(command, skipped):
    actions = _actions(_commands()[command])
    for field in FIELDS:
        if field not in skipped:
            assert _flag(field) in actions, (command, field)
            if (command, field) != ("compare", "out"):  # compare's own --out help
                assert FIELD_DOCS[field].help.split(" (")[0] in actions[_flag(field)].help, field
    if command == "compare":  # its own --attention list; each run is named ATTENTION-sSEED
        assert "comma-separated" in actions["--attention"].help
        assert "--name" not in actions


@pytest.mark.parametrize("command", ["train", "compare", "eval"])
def test_every_flag_has_help_and_help_shows_every_default(command):
    parser = _commands()[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, (command, action.dest)
        if not action.option_strings or action.dest == "print_config":  # RUN_DIR; a plain switch
            continue
        shown = " ".join(action.help.split())
        assert "default" in shown or f"(default: {action.default})" in text, (command, action.dest)


def test_help_shows_the_dataclass_defaults():
    text = " ".join(_commands()["train"].format_help().split())
    defaults = TrainConfig()
    for field in ("epochs", "batch_size", "lr", "optimizer", "schedule", "log_interval", "out"):
        assert f"(default: {getattr(defaults, field)})" in text, field
    assert "(default: the dataset's)" in text  # spatial_dims
    assert "moving-shapes: train_size=800, val_size=400, cache=true" in text


def test_compare_out_help_says_what_compare_does_with_it():
    help_text = " ".join(_actions(_commands()["compare"])["--out"].help.split())
    assert "ATTENTION-sSEED" in help_text and "compare.md" in help_text and "reused" in help_text
    assert "runs/compare-MODEL-DATA" in help_text


def test_precedence_defaults_then_config_file_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr": 0.05, "epochs": 7, "compile": True, "quiet": True,
                                    "step_epochs": 3, "attention_kwargs": {"reduction": 8}}))
    parser = build_parser()
    config = build_config(parser.parse_args(
        ["train", "--config", str(path), "--epochs", "2", "--no-compile", "--step-epochs", "5",
         "--attention-option", "kernel_size=3", "--log-interval", "7"]))
    assert config.lr == 0.05  # file over default
    assert (config.epochs, config.compile, config.step_epochs, config.log_interval) == (2, False, 5, 7)
    assert config.quiet is True  # not given: the file's value stays
    assert config.attention_kwargs == {"reduction": 8, "kernel_size": 3}  # merged key by key
    assert config.batch_size == TrainConfig.batch_size  # neither: the default


def test_print_config_prints_the_resolved_config_and_exits(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "runs"), "--epochs", "3", "--attention", "SE",
                 "--data-option", "train_size=20", "--print-config"]) == 0
    text = capsys.readouterr().out
    values = yaml.safe_load(text)
    assert list(values) == FIELDS
    config = TrainConfig.from_dict(values)
    assert (config.epochs, config.attention, config.out) == (3, "se", str(tmp_path / "runs"))
    assert config.data_options == {"train_size": 20, "val_size": 400, "cache": True}
    assert not (tmp_path / "runs").exists()  # nothing was trained or written
    # the printed YAML is a valid --config file giving the same config
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    assert build_config(build_parser().parse_args(["train", "--config", str(path)])) == config


def test_compare_print_config_is_a_loadable_base_config(tmp_path, capsys):
    assert main(["compare", "--attention", "none,se", "--seeds", "2", "--seed", "4", "--epochs", "1",
                 "--out", str(tmp_path / "cmp"), "--print-config"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"# excite compare: attention none,se x seeds 4, 5 into {tmp_path / 'cmp'}")
    values = yaml.safe_load(text)
    assert "attention" not in values and "name" not in values
    assert (values["seed"], values["epochs"]) == (4, 1)
    TrainConfig.from_dict(values)  # loads back
    assert not (tmp_path / "cmp").exists()


def test_eval_has_the_shared_vocabulary_and_device_auto():
    actions = _actions(_commands()["eval"])
    assert {"--data-option", "--model-option", "--attention-option", "--data-dir"} <= set(actions)
    device = actions["--device"]
    assert device.default == "auto" and set(device.choices) == {"auto", "cpu", "cuda"}
    assert TrainConfig.device == "auto"  # the same default as train
