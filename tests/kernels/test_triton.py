"""The Triton path: kernels under TRITON_INTERPRET=1 on CPU (or on CUDA when present).

The cases live in triton_cases.py and run in a subprocess, because the interpreter flag
must be set before triton is first imported. Skipped when triton is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")


def test_triton_cases_under_the_interpreter():
    here = Path(__file__).parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(here) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(here / "triton_cases.py")],
        env=env, capture_output=True, text=True, timeout=300, cwd=here.parent.parent,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
