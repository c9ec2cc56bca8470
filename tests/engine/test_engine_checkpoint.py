"""Atomic writes, safetensors weights, weights_only training state, corruption detection."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from excite.engine import checkpoint as ckpt
from excite.errors import ExciteError


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "file.bin"
    ckpt.atomic_write(path, lambda f: f.write(b"old"))

    def half_then_crash(f) -> None:
        f.write(b"new-but-incomp")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]

    # a crash between writing the temp file and renaming it: same guarantee
    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        ckpt.atomic_write(path, lambda f: f.write(b"new"))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_weights_round_trip_and_corruption(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3))
    path = ckpt.save_weights(tmp_path / "w.safetensors", model, {"epoch": "1"})
    other = nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3))
    ckpt.load_model_weights(other, path)
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ExciteError, match="do not fit the model"):
        ckpt.load_model_weights(nn.Sequential(nn.Conv1d(2, 4, 3)), path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ExciteError, match="truncated or corrupt"):
        ckpt.load_weights(path)
    with pytest.raises(ExciteError, match="weights file not found"):
        ckpt.load_weights(tmp_path / "none.safetensors")


def test_state_round_trip_restores_every_rng(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = ckpt.save_state(tmp_path / "state.pt", {"optimizer": opt.state_dict(), "rng": ckpt.rng_state(),
                                                   "epoch": 4})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = ckpt.load_state(path, required=("optimizer", "rng", "epoch"))
    ckpt.set_rng_state(state["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])
    restored = torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=0.1)
    restored.load_state_dict(state["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert state["epoch"] == 4


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_state_loading_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    with open(path, "wb") as handle:
        torch.save({"format": ckpt.STATE_FORMAT, "payload": Evil()}, handle, pickle_module=pickle)
    with pytest.raises(ExciteError, match="refusing to unpickle"):
        ckpt.load_state(path)


def test_state_detection_messages(tmp_path: Path) -> None:
    with pytest.raises(ExciteError, match="no resumable training state"):
        ckpt.load_state(tmp_path / "missing.pt")
    torch.save({"epoch": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ExciteError, match="not an excite training state"):
        ckpt.load_state(tmp_path / "foreign.pt")
    ckpt.save_state(tmp_path / "partial.pt", {"epoch": 1})
    with pytest.raises(ExciteError, match="incomplete: missing optimizer"):
        ckpt.load_state(tmp_path / "partial.pt", required=("epoch", "optimizer"))
    good = ckpt.save_state(tmp_path / "good.pt", {"epoch": 1, "w": torch.ones(1000)})
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ExciteError, match="truncated or corrupt"):
        ckpt.load_state(good)
