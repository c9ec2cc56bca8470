"""Datasets: built-in synthetic video and volumes, Fashion-MNIST, users' folders.

```python
from excite.data import list_datasets, load_splits
splits = load_splits("moving-shapes", seed=0, frames=8)
x, y = splits.train[0]          # float32 (C, *spatial), int label
splits.info.sample_shape        # (1, 8, 64, 64)
```

Every dataset yields ``(x, y)`` with ``x`` a float32 tensor of shape
``info.sample_shape`` and ``y`` an int in ``[0, info.num_classes)``. See docs/data.md.
"""

from __future__ import annotations

# importing the builders registers them
from excite.data import fashion_mnist as _fashion_mnist  # noqa: F401
from excite.data import folders as _folders  # noqa: F401
from excite.data import synthetic as _synthetic  # noqa: F401
from excite.data._common import DataWarning
from excite.data.fashion_mnist import read_idx
from excite.data.registry import (
    DatasetInfo,
    DataSplits,
    dataset_options,
    list_datasets,
    load_splits,
    parse_data_options,
)

__all__ = [
    "DataSplits",
    "DataWarning",
    "DatasetInfo",
    "dataset_options",
    "list_datasets",
    "load_splits",
    "parse_data_options",
    "read_idx",
]
