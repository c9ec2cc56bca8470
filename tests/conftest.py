"""Suite-wide settings.

Under pytest-xdist each worker gets one intra-op thread, so two workers on a 2-core
machine do not oversubscribe it.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
