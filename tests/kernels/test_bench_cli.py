"""``excite bench`` is registered and fails with one clear line outside a checkout."""

from __future__ import annotations

import pytest

from excite.cli import main


def test_bench_outside_a_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "attention"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "source checkout" in err


def test_bench_rejects_unknown_suite(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "everything"])
    assert exc.value.code == 2
