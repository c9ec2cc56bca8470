"""Suite-wide settings.

Under pytest-xdist each worker gets one intra-op thread, so two workers on a 2-core
machine do not oversubscribe it.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_dynamo_cache():
    """Every test compiles from an empty torch.compile cache: under pytest-xdist a worker
    runs whichever tests it is handed, and Dynamo's per-code-object recompile limit (8)
    would count the modules of that worker's earlier tests too, so a full-graph compile
    test would fail or pass by its worker's history."""
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
