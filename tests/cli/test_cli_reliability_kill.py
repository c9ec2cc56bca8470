"""Two `excite train` at once, and a SIGTERM mid-epoch after a `--save-every` save (issue
13 items 1 and 5), with real processes.

One test, to keep it to one child process: a child `excite train --save-every 1` and this
process's own `excite train` with the same options start together (so both choose the
run directory's name at the same moment); the child then waits after its step 2 until
it gets SIGTERM. Both runs must end up in their own folders, the child's stopped at step
2 with exit status 130, and resumed it must end with exactly the metrics and weights of
the uninterrupted run in the other folder.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from excite.cli import main
from excite.engine.checkpoint import load_state, load_weights
from excite.engine.rundir import RunDirectory

# 24 train / 8 val clips of 1x4x16x16, batch 8: 3 steps per epoch
TINY = ["--data-option", "train_size=24", "--data-option", "val_size=8", "--data-option", "size=16x16",
        "--data-option", "radius=2,3", "--data-option", "frames=4", "--batch-size", "8", "--quiet",
        "--device", "cpu", "--epochs", "2"]
NAME = "tiny_resnet-cbam-moving-shapes-s0"
KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr")

# The child: `excite train ARGV` with THREADS intra-op threads (as this process: float sums
# depend on the thread count), announcing itself in READY just before it starts, and
# waiting after step 2 until a stop signal arrives (or RELEASE appears: a safety net).
CHILD = """
import sys, time
from pathlib import Path
import torch
from excite.cli import main
from excite.engine import train as train_module
from excite.engine.rundir import RunDirectory

RunDirectory.save_curves = lambda self, *args, **kwargs: None  # drawing is not tested here
ready, release, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
original = train_module.Trainer._after_step

def after_step(self, finite):
    if self.global_step == 2:
        while not self.stop.requested and not release.exists():
            time.sleep(0.02)
    return original(self, finite)

train_module.Trainer._after_step = after_step
ready.write_text("")
sys.exit(main(["train", *sys.argv[4:]]))
"""


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return [{k: r[k] for k in KEYS} for r in csv.DictReader(handle)]


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_two_runs_at_once_get_their_own_folders_and_sigterm_mid_epoch_resumes_bit_identically(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(RunDirectory, "save_curves", lambda self, *args, **kwargs: None)
    out = tmp_path / "runs"
    ready, release = tmp_path / "ready", tmp_path / "release"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ready), str(release),
                              str(torch.get_num_threads()), *TINY, "--save-every", "1", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(ready.exists, 120, "the child to start")
        assert main(["train", *TINY, "--out", str(out)]) == 0  # at the same time as the child
        capsys.readouterr()

        def claimed() -> list[Path]:
            return sorted(p for p in out.iterdir() if (p / "config.yaml").is_file())

        _wait_for(lambda: len(claimed()) == 2, 120, "the child's run directory")  # it may be slower
        folders = claimed()
        assert [p.name for p in folders] == [NAME, f"{NAME}-2"]
        assert sorted(p.name for p in out.iterdir()) == [NAME, f"{NAME}-2"]
        by_save_every = {yaml.safe_load((p / "config.yaml").read_text())["save_every"]: p for p in folders}
        mine, theirs = by_save_every[None], by_save_every[1]
        # the child saved after step 1 (--save-every 1) and now waits after step 2
        _wait_for(lambda: (theirs / "state.pt").is_file(), 120, "the child's first save")
        assert load_state(theirs / "state.pt")["global_step"] == 1
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=120)
    finally:
        release.write_text("")
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, output
    assert "SIGTERM received: stopping after this step" in output and "interrupted" in output
    state = load_state(theirs / "state.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 2, 2)  # mid-epoch 1
    assert json.loads((theirs / "summary.json").read_text())["status"] == "interrupted"
    assert json.loads((mine / "summary.json").read_text())["status"] == "finished"
    assert not (theirs / "metrics.csv").exists()

    assert main(["train", "--resume", str(theirs)]) == 0
    capsys.readouterr()
    assert _rows(theirs) == _rows(mine)
    a, b = load_weights(mine / "last.safetensors"), load_weights(theirs / "last.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
