"""Shared pieces of the dataset builders: seeded stratified splits and subsets, the
skip-and-count policy for unreadable files, and small ``Dataset`` wrappers."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from excite.errors import ExciteError


class DataWarning(UserWarning):
    """An input file was skipped (unreadable or unusable)."""


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A NumPy generator determined by ``seed`` and the integers ``stream``.

    Independent streams (e.g. ``(seed, split, index)``) give independent generators, so a
    sample does not depend on the order in which samples are drawn.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def stratified_split(
    labels: Sequence[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split indices into train/val keeping each class's share.

    Every class contributes ``round(n_c * val_fraction)`` samples to val, at least one
    when it has two or more samples and at most ``n_c - 1`` (so every class stays in
    training). The permutation is drawn from ``seed``.

    Returns:
        ``(train_indices, val_indices)``, each sorted.

    Raises:
        ExciteError: the split leaves the validation set empty.
    """
    labels_arr = np.asarray(labels)
    rng = rng_for(seed, 0x5EED)
    train: list[int] = []
    val: list[int] = []
    for cls in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == cls)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    if not val:
        raise ExciteError(
            f"val_fraction={val_fraction} leaves no validation samples out of {len(labels_arr)}; "
            "add samples or raise val_fraction"
        )
    return sorted(train), sorted(val)


def stratified_subset(labels: Sequence[int], size: int, seed: int, stream: int) -> list[int]:
    """``size`` indices drawn without replacement, classes as balanced as possible.

    Classes take turns (round robin over each class's seeded permutation), so a subset
    of ``k * num_classes`` samples has exactly ``k`` per class when every class has them.
    """
    labels_arr = np.asarray(labels)
    if size >= len(labels_arr):
        return list(range(len(labels_arr)))
    rng = rng_for(seed, 0x5B5E7, stream)
    per_class = [
        np.flatnonzero(labels_arr == cls)[rng.permutation(int((labels_arr == cls).sum()))]
        for cls in np.unique(labels_arr)
    ]
    picked: list[int] = []
    depth = 0
    while len(picked) < size:
        for idx in per_class:
            if depth < len(idx) and len(picked) < size:
                picked.append(int(idx[depth]))
        depth += 1
    return sorted(picked)


class SkipLog:
    """Collects unreadable files: warn and skip, or raise when ``strict``.

    Call :meth:`skip` for each bad file and :meth:`finish` once scanning is done; the
    latter warns once more with the total.
    """

    def __init__(self, dataset: str, *, strict: bool) -> None:
        self.dataset = dataset
        self.strict = strict
        self.skipped: list[Path] = []
        self.seen = 0

    def skip(self, path: Path, reason: BaseException | str) -> None:
        if self.strict:
            raise ExciteError(f"{self.dataset}: cannot read {path}: {reason} (strict mode)")
        self.skipped.append(path)
        warnings.warn(f"{self.dataset}: skipping unreadable file {path}: {reason}", DataWarning, stacklevel=3)

    def finish(self) -> None:
        if self.skipped:
            warnings.warn(
                f"{self.dataset}: skipped {len(self.skipped)} unreadable file(s) out of "
                f"{self.seen}; use strict mode (--strict) to stop at the first one instead",
                DataWarning,
                stacklevel=3,
            )


class IndexedDataset(Dataset):
    """Samples ``make(i)`` for ``i`` in ``range(length)``, optionally memoised.

    ``make`` must be deterministic in ``i``; with ``cache=True`` each sample is built once
    per process and kept (memory: ``length`` × sample size).
    """

    def __init__(self, length: int, make: Callable[[int], tuple[torch.Tensor, int]], *, cache: bool = False):
        self.length = length
        self.make = make
        self.cache: dict[int, tuple[torch.Tensor, int]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = _check_index(index, self.length)
        if self.cache is None:
            return self.make(index)
        hit = self.cache.get(index)
        if hit is None:
            hit = self.cache[index] = self.make(index)
        return hit[0].clone(), hit[1]


class StoredDataset(Dataset):
    """Samples kept in memory (any storage dtype), converted by ``convert`` on access."""

    def __init__(
        self,
        items: Sequence[Any],
        labels: Sequence[int],
        convert: Callable[[Any], torch.Tensor],
    ) -> None:
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels")
        self.items = items
        self.labels = [int(y) for y in labels]
        self.convert = convert

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = _check_index(index, len(self.labels))
        return self.convert(self.items[index]), self.labels[index]


def _check_index(index: int, length: int) -> int:
    if isinstance(index, torch.Tensor):
        index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} samples")
    return index
