"""`excite train` on a user's image folder: unreadable files are skipped with a one-line
warning naming the file, or stop the run with --strict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from excite.cli import main

Image = pytest.importorskip("PIL.Image")

TINY = ["--model", "tiny_resnet", "--attention", "se", "--epochs", "1", "--batch-size", "4",
        "--quiet", "--device", "cpu"]


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return bad


def test_unreadable_file_is_skipped_with_one_line_warning(tmp_path: Path, capsys) -> None:
    bad = _image_folder(tmp_path / "data")
    code = main(["train", "--data", "image-folder", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "runs"), *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    warning_lines = [line for line in err.splitlines() if "warning:" in line]
    assert any(str(bad) in line for line in warning_lines), err
    assert any("skipped 1 unreadable file(s)" in line for line in warning_lines), err
    assert all(line.startswith("excite train: warning:") for line in warning_lines), err


def test_strict_stops_at_the_unreadable_file(tmp_path: Path, capsys) -> None:
    bad = _image_folder(tmp_path / "data")
    code = main(["train", "--data", "image-folder", "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "runs"), "--strict", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and str(bad) in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))
