"""DDP with 2 CPU processes (gloo) equals one process with the same global batch.

Both runs see the same samples per optimizer step: DistributedSampler(seed).set_epoch(e)
draws one permutation and rank r takes every 2nd index, so the union of the two local
batches of 8 is the single process's batch of 16; DDP averages the two local mean-loss
gradients, which is the mean over 16. Only float summation order differs, so weights
must agree to 1e-5 (absolute) and every logged metric to 1e-5 after 8 SGD steps.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from excite.engine.checkpoint import load_weights

WORKER = Path(__file__).with_name("ddp_worker.py")
TOL = 1e-5


def _run(cmd: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(cmd + [str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, str(WORKER)], single)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(WORKER)], ddp)

    w1, w2 = load_weights(single / "last.safetensors"), load_weights(ddp / "last.safetensors")
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=TOL, msg=key)
    m1, m2 = _metrics(single), _metrics(ddp)
    assert len(m1) == len(m2) == 2
    for r1, r2 in zip(m1, m2):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert abs(float(r1[key]) - float(r2[key])) <= TOL, (key, r1[key], r2[key])
    # rank 0 alone wrote the run directory, and it knows it ran on two processes
    import json

    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2
    assert json.loads((single / "summary.json").read_text())["world_size"] == 1
