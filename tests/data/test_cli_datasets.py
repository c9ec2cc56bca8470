"""`excite datasets` lists every dataset and shows one dataset's options."""

from __future__ import annotations

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
    main(["datasets", "moving-shapes"])
    out = capsys.readouterr().out
    assert "default 64x64" in out and "default 2000" in out and "default none" in out
    assert "default right,left,down,up" in out and "default false" in out


def test_excite_datasets_unknown_name_is_one_line_error(capsys):
    assert main(["datasets", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "moving-shapes" in err
