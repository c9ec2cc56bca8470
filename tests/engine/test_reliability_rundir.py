"""What a run directory guarantees (issue 13 items 1, 3, 5, 8, 14, 15): one folder per run
even when runs start at once, one epoch's files consistent as a unit, dead ends made
resumable, stray temporary files removed, a full disk reported in one line, the umask
respected, custom models and data recorded.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
import torch
import yaml

from engine_helpers import TinyNet, blob_splits
from excite.engine import TrainConfig, fit
from excite.engine import checkpoint as ckpt
from excite.engine.checkpoint import DiskFullError, load_state
from excite.engine.evaluate import evaluate_run
from excite.engine.rundir import RunDirectory
from excite.engine.train import resolve_resume
from excite.errors import ExciteError
from reliability_helpers import CONFIG, At, Killed, assert_same_run, kill, no_curves, rows, run, without_curves  # noqa: F401


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("straight")
    with without_curves():
        run(tmp, "straight")
    return tmp / "straight"


def _at_once(n: int, work) -> list:
    """``work()`` in ``n`` threads released together; their results (or exceptions)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work()
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- item 1: one folder per run ------------------------------------------------------
def test_runs_started_at_once_claim_different_folders(tmp_path: Path) -> None:
    base = tmp_path / "out" / "tiny-cbam"
    claimed = _at_once(8, lambda: RunDirectory.claim(base, numbered=True).path)
    assert sorted(claimed, key=str) == sorted([base, *(base.with_name(f"tiny-cbam-{i}") for i in range(2, 9))],
                                              key=str)
    with pytest.raises(ExciteError, match=r"tiny-cbam already exists and is not an excite run directory"):
        RunDirectory.claim(base, numbered=False)  # a name the user chose is refused, not renamed


def test_only_one_of_two_runs_writing_into_one_folder_gets_it(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path / "shared")
    results = _at_once(6, lambda: run_dir.create(TrainConfig(epochs=1)))
    assert results.count(None) == 1
    assert all(isinstance(r, ExciteError) and "already exists" in str(r) for r in results if r is not None)
    assert sorted(p.name for p in run_dir.path.iterdir()) == ["config.yaml"]


def test_fit_never_overwrites_a_run_and_numbers_default_names(tmp_path: Path) -> None:
    run(tmp_path, "done", config={"epochs": 1})
    before = {p.name: p.read_bytes() for p in (tmp_path / "done").iterdir()}
    with pytest.raises(ExciteError, match="already exists; continue it with --resume"):
        run(tmp_path, "done", config={"epochs": 1, "lr": 0.5})
    assert {p.name: p.read_bytes() for p in (tmp_path / "done").iterdir()} == before
    # no run_dir: OUT/NAME claimed atomically; a default name gets -2, a chosen one is refused
    config = TrainConfig(epochs=1, batch_size=16, quiet=True, device="cpu", out=str(tmp_path / "o"))
    dirs = [fit(config, splits=blob_splits(), model=TinyNet(), log=lambda m: None)["run_dir"] for _ in range(2)]
    assert [Path(d).name for d in dirs] == [config.run_name, config.run_name + "-2"]
    named = TrainConfig(**{**config.to_dict(), "name": "mine"})
    fit(named, splits=blob_splits(), model=TinyNet(), log=lambda m: None)
    with pytest.raises(ExciteError, match="run directory .*mine already exists"):
        fit(named, splits=blob_splits(), model=TinyNet(), log=lambda m: None)


# -- item 3: one epoch's files as a unit ------------------------------------------------
def test_state_is_written_last_so_a_kill_before_it_is_repaired_on_resume(tmp_path: Path, straight: Path,
                                                                          monkeypatch) -> None:
    written: list[str] = []
    original = {name: getattr(RunDirectory, name) for name in ("save_state", "save_summary")}

    def recording(name):
        def write(self, *args, **kwargs):
            written.append(name)
            if name == "save_state" and len(rows(self.path)) == 2:
                raise Killed  # killed after epoch 2's metrics.csv row, before its state.pt
            return original[name](self, *args, **kwargs)
        return write

    for name in original:
        monkeypatch.setattr(RunDirectory, name, recording(name))
    with pytest.raises(Killed):
        run(tmp_path, "cut")
    monkeypatch.undo()
    assert written == ["save_summary", "save_state"] * 2  # per epoch: ..., summary, state last
    assert len(rows(tmp_path / "cut")) == 2 and load_state(tmp_path / "cut" / "state.pt")["epoch"] == 1
    lines: list[str] = []
    with without_curves():
        run(tmp_path, "cut", resume=True, log=lines.append)
    assert any("had epochs 1..2 but state.pt records 1 " in line and "rewrote it" in line for line in lines)
    assert_same_run(straight, tmp_path / "cut")


def test_a_metrics_row_missing_after_the_final_state_is_restored_on_resume(tmp_path: Path, straight: Path) -> None:
    # what a kill between state.pt and metrics.csv left (the write order before): one row short
    run(tmp_path, "short")
    metrics = tmp_path / "short" / "metrics.csv"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))
    assert len(rows(tmp_path / "short")) == 1
    lines: list[str] = []
    run(tmp_path, "short", resume=True, log=lines.append)
    assert any("had epochs 1 but state.pt records 1..2" in line for line in lines)
    assert_same_run(straight, tmp_path / "short")


# -- item 5: dead ends and stray temporary files --------------------------------------
def test_a_run_killed_before_its_first_save_restarts_from_step_zero(tmp_path: Path, straight: Path) -> None:
    with pytest.raises(Killed):
        run(tmp_path, "dead", callbacks=[At(2, kill)])
    dead = RunDirectory(tmp_path / "dead")
    assert dead.config_path.is_file() and not dead.has_state()
    assert "it stopped before saving a resumable state, so that starts it again from step 0" in dead.taken_message()
    stray = dead.path / ".state.pt.0a1b2c3d.tmp"
    stray.write_bytes(b"half a file")
    keep = dead.path / "notes.tmp"  # not one of ours: kept
    keep.write_text("mine")
    lines: list[str] = []
    run(tmp_path, "dead", resume=True, log=lines.append)
    assert "has no saved state (it stopped before saving one): starting it again from step 0" in " ".join(lines)
    assert any("removed 1 temporary file(s)" in line for line in lines)
    assert not stray.exists() and keep.read_text() == "mine"
    assert_same_run(straight, dead.path)


@pytest.mark.parametrize("status", ["converted", "finished"])
def test_a_folder_with_weights_but_no_state_is_never_restarted_over(tmp_path: Path, status: str) -> None:
    # what `excite convert --out RUN_DIR` writes (status "converted"), or a finished run whose
    # state.pt was deleted: their weights must not be overwritten by a restart from step 0
    run_dir = RunDirectory(tmp_path / "kept")
    run_dir.create(TrainConfig(**CONFIG))
    (run_dir.path / "summary.json").write_text(json.dumps({"status": status}))
    ckpt.save_weights(run_dir.best_path, TinyNet())
    before = run_dir.best_path.read_bytes()
    assert not run_dir.restartable()
    assert run_dir.taken_message() == (f"run directory {run_dir.path} already exists (status {status!r}); "
                                       "choose another --name")
    with pytest.raises(ExciteError, match=f"has no resumable training state and its status is '{status}', so "
                                          "it is not restarted .*start a new run with --init-from .*best"):
        run(tmp_path, "kept", resume=True)
    assert run_dir.best_path.read_bytes() == before


def test_remove_stray_temps_takes_only_atomic_write_names(tmp_path: Path) -> None:
    names = [".state.pt.0a1b2c3d.tmp", ".metrics.csv.k_9zq2xw.tmp", ".x.tmp", "a.tmp", ".state.pt.abc.tmp",
             "state.pt"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = ckpt.remove_stray_temps(tmp_path)
    assert [p.name for p in removed] == [".metrics.csv.k_9zq2xw.tmp", ".state.pt.0a1b2c3d.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".x.tmp", "a.tmp", ".state.pt.abc.tmp", "state.pt"])


def test_save_every_may_change_on_resume_other_fields_may_not(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path / "r")
    run_dir.create(TrainConfig(epochs=2, save_every=2))
    assert resolve_resume(run_dir.path, {"save_every": 5, "epochs": 3}).save_every == 5
    with pytest.raises(ValueError, match="cannot change init_from when resuming"):
        resolve_resume(run_dir.path, {"init_from": "other.safetensors"})


# -- item 8: a full disk ----------------------------------------------------------------
def test_a_full_disk_is_one_line_with_the_bytes_and_the_summary_says_failed(tmp_path: Path,
                                                                             monkeypatch) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (writes to it fail with ENOSPC)")
    real = ckpt.create_temp

    def full_for_state(path: Path):
        fd, tmp = real(path)
        if path.name == "state.pt":  # the kernel's own "No space left on device"
            os.close(fd)
            return os.open("/dev/full", os.O_WRONLY), tmp
        return fd, tmp

    monkeypatch.setattr(ckpt, "create_temp", full_for_state)
    with pytest.raises(DiskFullError) as info:
        run(tmp_path, "full")
    message = str(info.value)
    state = tmp_path / "full" / "state.pt"
    assert message.startswith(f"no space left on device: writing {state} needs ") and "\n" not in message
    assert info.value.needed > 1000 and f"{info.value.needed:,} bytes" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("DiskFullError: no space left")
    assert not [p for p in (tmp_path / "full").iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_reports_the_exact_size_of_known_content(tmp_path: Path, monkeypatch) -> None:
    def full(path: Path):
        fd, tmp = os.open("/dev/full", os.O_WRONLY), path.parent / f".{path.name}.deadbeef.tmp"
        tmp.write_bytes(b"")
        return fd, tmp

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    monkeypatch.setattr(ckpt, "create_temp", full)
    with pytest.raises(DiskFullError, match=r"writing .*w\.bin needs 100,000 bytes, [\d,]+ bytes free"):
        ckpt.atomic_write(tmp_path / "w.bin", b"x" * 100_000)
    with pytest.raises(DiskFullError, match=r"needs at least 5 bytes"):
        ckpt.atomic_write(tmp_path / "w.bin", lambda f: f.write(b"hello"))
    assert not (tmp_path / "w.bin").exists() and not list(tmp_path.iterdir())


# -- item 14: the umask decides the permissions -----------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_run_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        run(tmp_path, "perm", config={"epochs": 1})
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "perm").iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"config.yaml", "metrics.csv", "summary.json", "state.pt",
                                       "best.safetensors", "last.safetensors"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name


# -- item 15: custom models and data are recorded ----------------------------------------
def test_a_custom_model_and_data_are_recorded_and_cannot_be_rebuilt_by_name(tmp_path: Path) -> None:
    run(tmp_path, "custom", config={"epochs": 1})
    run_dir = RunDirectory(tmp_path / "custom")
    saved = yaml.safe_load(run_dir.config_path.read_text())
    assert (saved["custom_model"], saved["custom_data"]) == ("TinyNet", "blobs")
    summary = run_dir.read_summary()
    assert (summary["model"], summary["custom_model"], summary["data"], summary["custom_data"]) == (
        "TinyNet", "TinyNet", "blobs", "blobs")
    # --resume and excite eval read the config: they say what they cannot rebuild
    with pytest.raises(ExciteError, match=r"custom model \(TinyNet\) and custom data \(blobs\), which its "
                                          r"config.yaml cannot rebuild"):
        resolve_resume(run_dir.path, {})
    with pytest.raises(ExciteError, match=r"custom model \(TinyNet\)"):
        evaluate_run(run_dir.path)
    # fit(resume=True) needs them again, and then continues
    config = TrainConfig.from_dict({**{k: v for k, v in saved.items() if not k.startswith("custom_")},
                                    "epochs": 2})
    with pytest.raises(ExciteError, match=r"resume it with fit\(config, model=..., run_dir=..., resume=True\)"):
        fit(config, splits=blob_splits(), run_dir=run_dir.path, resume=True, log=lambda m: None)
    summary = fit(config, splits=blob_splits(), model=TinyNet(), run_dir=run_dir.path, resume=True,
                  log=lambda m: None)
    assert summary["epochs_done"] == 2 and summary["custom_model"] == "TinyNet"


def test_splits_built_from_the_config_are_not_custom_data(tmp_path: Path) -> None:
    from excite.engine.builders import build_splits
    from excite.engine.train import custom_parts

    config = TrainConfig(data="moving-shapes", data_options={"train_size": 4, "val_size": 4, "size": [16, 16], "radius": [2, 3],
                                                              "frames": 2})
    built = build_splits(config)
    assert custom_parts(config, model=None, splits=built) == {}
    other = TrainConfig(**{**config.to_dict(), "seed": 1})
    assert custom_parts(other, model=None, splits=built) == {"custom_data": "moving-shapes"}
    assert custom_parts(config, model=torch.nn.Linear(1, 1), splits=None) == {"custom_model": "Linear"}
