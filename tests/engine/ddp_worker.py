"""Run by tests/engine/test_engine_distributed.py: `python -m torch.distributed.run ... ddp_worker.py OUT`.

Trains TinyNet (no BatchNorm, no dropout: per-process batch statistics and dropout masks
would legitimately differ from one process's) on the blob data with a global batch of 16,
two epochs, SGD. With WORLD_SIZE unset it runs single-process.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from engine_helpers import TinyNet, blob_splits  # noqa: E402

from excite.engine import TrainConfig, fit  # noqa: E402

torch.set_num_threads(1)
config = TrainConfig(epochs=2, batch_size=16, lr=0.1, optimizer="sgd", seed=3, quiet=True,
                     device="cpu", weight_decay=0.0)
torch.manual_seed(3)
fit(config, splits=blob_splits(64, 32), model=TinyNet(norm=False, dropout=0.0), run_dir=sys.argv[1])
