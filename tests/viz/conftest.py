"""A tiny finished run directory (moving-shapes, 1x4x32x32 clips, one epoch: seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from excite.cli import main

TINY = ["--data-option", "train_size=16", "--data-option", "val_size=8",
        "--data-option", "size=32x32", "--data-option", "radius=3,5", "--data-option", "frames=4",
        "--batch-size", "8", "--epochs", "1", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="session")
def video_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of `excite train` on tiny moving-shapes clips (tiny_resnet + CBAM).

    Tests must not write into it; copy it (``shutil.copytree``) to change it.
    """
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--out", str(out), "--name", "video", *TINY]) == 0
    return out / "video"
