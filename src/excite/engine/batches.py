"""Batches for the training and evaluation loops: loaders, device moves, autocast.

Both loops read a dataset through :func:`make_loader` (a fixed list of indices, in
order) and move each batch with :func:`to_device`, so training and validation see the
samples in exactly the form ``excite eval`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class IndexSampler(Sampler[int]):
    """Yields ``indices`` in the given order (the loops decide order and sharding)."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset: Dataset, indices: Sequence[int], *, batch_size: int, workers: int,
                device: torch.device, seed: int) -> DataLoader:
    """A DataLoader over ``dataset[i] for i in indices``, batches of ``batch_size``.

    The loader has its own generator (seeded with ``seed``): creating an iterator must not
    draw from the global RNG, or a resumed run's dropout masks would shift.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=IndexSampler(indices),
                      num_workers=workers, drop_last=False, pin_memory=device.type == "cuda",
                      persistent_workers=False, generator=torch.Generator().manual_seed(seed))


def training_samples(n: int, batch_size: int) -> int:
    """How many of a process's ``n`` samples per epoch training uses with ``batch_size``.

    All of them, except that a last batch of one sample is dropped (``drop_last`` only
    when the remainder is 1): BatchNorm cannot normalise a batch of one in training mode
    ("Expected more than 1 value per channel"), and a training set whose size is 1 more
    than a multiple of the batch is easy to get (a few unreadable files skipped).

    Raises:
        ValueError: ``n`` is 1 while ``batch_size`` is larger (nothing would be left).
    """
    if batch_size > 1 and n % batch_size == 1:
        if n == 1:
            raise ValueError(
                f"the training split gives each process 1 sample per epoch; training needs at "
                f"least 2 (a batch of one cannot be normalised), with batch_size {batch_size}"
            )
        return n - 1
    return n


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device,
              memory_format: torch.memory_format = torch.preserve_format,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs as float32 in ``memory_format`` and labels as int64, on ``device``."""
    x = x.to(device, non_blocking=True).float()
    if memory_format is not torch.preserve_format:
        x = x.contiguous(memory_format=memory_format)
    return x, y.to(device, non_blocking=True).long()


def memory_format_for(input_shape: Sequence[int], channels_last: bool) -> torch.memory_format:
    """channels_last for (C, H, W) samples, channels_last_3d for (C, T, H, W), else as is."""
    if not channels_last or len(input_shape) not in (3, 4):
        return torch.preserve_format
    return torch.channels_last if len(input_shape) == 3 else torch.channels_last_3d


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; no-op for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
