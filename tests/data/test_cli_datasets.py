"""`excite datasets` lists every dataset and shows one dataset's options."""

from __future__ import annotations

import re

import pytest

from excite.cli import main
from excite.data import dataset_options, list_datasets


def test_excite_datasets_lists_all(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "KIND"]
    for name in list_datasets():
        row = next(line for line in lines if line.startswith(name + " "))
        assert len(row.split()) >= 4
    assert "1x16x64x64" in out and "1x28x28" in out and "1x32x32x32" in out


@pytest.mark.parametrize("name", list_datasets())
def test_excite_datasets_name_shows_every_option(capsys, name):
    assert main(["datasets", name]) == 0
    out = capsys.readouterr().out
    assert out.startswith(name)
    for key in dataset_options(name):
        assert f"  {key} " in out
    assert ("needs --data-dir" in out) == name.endswith("-folder")


def test_excite_datasets_shows_defaults_in_cli_syntax(capsys):
    main(["datasets", "shapes3d"])
    out = capsys.readouterr().out
    assert "default 32x32x32" in out and "default 1000" in out and "default none" in out
    assert "default false" in out
    main(["datasets", "moving-shapes"])
    out = capsys.readouterr().out
    assert "default 64x64" in out and "default right,left,down,up" in out


def _option_line(out: str, key: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"  {key} "))


def test_moving_shapes_shows_the_defaults_excite_train_uses_and_the_librarys(capsys):
    """`excite train` trains on 800 clips and validates on 400 (README), cached; the
    dataset's own defaults are 2000 / derived / not cached. Both are shown."""
    main(["datasets", "moving-shapes"])
    out = capsys.readouterr().out
    assert "default 800 for excite train, 2000 for excite.data.load_splits" in _option_line(out, "train_size")
    assert "default 400 for excite train, none for excite.data.load_splits" in _option_line(out, "val_size")
    assert "default true for excite train, false for excite.data.load_splits" in _option_line(out, "cache")
    assert "default 16:" in _option_line(out, "frames")  # same for both: one value
    assert dataset_options("moving-shapes")["train_size"] == 2000


def test_excite_train_really_uses_the_defaults_datasets_shows(capsys):
    import argparse

    from excite.cli.train import build_config

    main(["datasets", "moving-shapes"])
    out = capsys.readouterr().out
    config = build_config(argparse.Namespace(config=None))  # no flags: the defaults
    assert config.data == "moving-shapes"
    assert (config.data_options["train_size"], config.data_options["val_size"]) == (800, 400)
    assert config.data_options
    for key, value in config.data_options.items():  # what training gets is what is shown
        shown = re.search(r"default (\S+?)(?: for excite train,|:)", _option_line(out, key)).group(1)
        assert shown == ("none" if value is None else str(value).lower()), (key, value, shown)


def test_excite_datasets_unknown_name_is_one_line_error(capsys):
    assert main(["datasets", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "moving-shapes" in err
