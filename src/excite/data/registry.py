"""Dataset registry: names → builders, the :class:`DatasetInfo` / :class:`DataSplits`
records they return, and :func:`load_splits`, the one entry point the engine uses.

A builder is a function ``build(*, data_dir, val_fraction, seed, strict, **options)``
whose keyword-only options match the :class:`~excite.data.options.Option` table it is
registered with (a test checks the two agree).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from excite.data.options import Option

_COMMON = ("data_dir", "val_fraction", "seed", "strict")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: registry name, e.g. ``"moving-shapes"``.
        num_classes: number of labels; samples carry ``y`` in ``[0, num_classes)``.
        in_channels: ``C`` of every sample.
        spatial_dims: 1, 2 or 3 (the rank a model needs).
        sample_shape: ``(C, *spatial)`` of every sample.
        class_names: one name per label, in label order.
        description: one line for listings.
    """

    name: str
    num_classes: int
    in_channels: int
    spatial_dims: int
    sample_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.sample_shape) != self.spatial_dims + 1:
            raise ValueError(
                f"sample_shape {self.sample_shape} does not have 1 + spatial_dims "
                f"({self.spatial_dims}) entries"
            )
        if self.sample_shape[0] != self.in_channels:
            raise ValueError(
                f"sample_shape {self.sample_shape} does not start with in_channels {self.in_channels}"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for num_classes={self.num_classes}"
            )


@dataclass(frozen=True)
class DataSplits:
    """A training and a validation dataset with their shared :class:`DatasetInfo`.

    ``train`` and ``val`` yield ``(x, y)``: ``x`` a float32 tensor of shape
    ``info.sample_shape``, ``y`` an ``int`` in ``[0, info.num_classes)``.
    """

    train: Dataset
    val: Dataset
    info: DatasetInfo


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its builder, options and listing text."""

    name: str
    build: Callable[..., DataSplits]
    options: Mapping[str, Option]
    description: str
    kind: str  # "video", "volume", "image"
    shape: str  # default sample shape for listings, e.g. "1x16x64x64"
    classes: str  # e.g. "4 (motion direction)"
    needs_data_dir: bool = False
    extras: tuple[str, ...] = field(default=())


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (names are unique); returns it."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    params = inspect.signature(spec.build).parameters
    declared = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    missing = (set(spec.options) | set(_COMMON)) - declared
    if missing:
        raise TypeError(f"builder of {spec.name!r} lacks keyword-only parameters {sorted(missing)}")
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; ``ValueError`` listing valid names."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {name!r}")
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    return spec


def dataset_options(name: str) -> dict[str, Any]:
    """The options dataset ``name`` accepts, mapped to their defaults.

    Raises:
        ValueError: ``name`` is not a registered dataset.
    """
    return {key: opt.default for key, opt in get_spec(name).options.items()}


def resolve_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults updated with ``options``, every value parsed/validated by its kind.

    Strings are parsed (``"8"`` → 8, ``"64x64"`` → (64, 64), ``"none"`` → None), so
    values from ``--data-option key=value`` can be passed through unchanged.

    Raises:
        TypeError: an option name the dataset does not accept (the message lists the
            valid ones), or a value of the wrong type.
        ValueError: a value out of range.
    """
    spec = get_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise TypeError(
            f"dataset {name!r} got unknown option(s) {unknown}; "
            f"valid options: {', '.join(spec.options) or '(none)'}"
        )
    resolved: dict[str, Any] = {}
    for key, opt in spec.options.items():
        if key in options:
            resolved[key] = opt.kind(key, options[key])
        else:
            resolved[key] = opt.default
    return resolved


def parse_data_options(name: str, pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` (the CLI's ``--data-option``) for dataset ``name``.

    Returns the given options only (not the defaults), with values parsed by each
    option's kind, ready for ``load_splits(name, **options)``.

    Raises:
        ValueError: a pair without ``=``, or a value the option does not accept.
        TypeError: an unknown option name.
    """
    given: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"data option must look like key=value, got {pair!r}")
        given[key] = value
    resolved = resolve_options(name, given)
    return {key: resolved[key] for key in given}


def load_splits(
    name: str,
    *,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    **options: Any,
) -> DataSplits:
    """Build the train and validation datasets registered as ``name``.

    Args:
        name: one of :func:`list_datasets`.
        data_dir: folder holding the files (folder datasets: required; fashion-mnist:
            the only folder searched when given); ignored by the built-in synthetic
            datasets.
        val_fraction: share of samples held out for validation when the dataset has no
            split of its own (folders); sizes the synthetic validation set when its
            ``val_size`` is not given. Must be in (0, 1).
        seed: seeds generation and splits; same seed, same samples.
        strict: stop at the first unreadable file instead of warning and skipping it.
        **options: dataset-specific options, see :func:`dataset_options` and docs/data.md.
            Strings are parsed by each option's type.

    Returns:
        :class:`DataSplits` with ``train``, ``val`` and ``info``.

    Raises:
        ValueError: unknown dataset name (lists the valid ones) or bad argument values.
        TypeError: unknown option names (named in the message) or wrong types.
        excite.errors.ExciteError: missing or unusable data files.
    """
    spec = get_spec(name)
    resolved = resolve_options(name, options)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise TypeError(f"val_fraction must be a float in (0, 1), got {val_fraction!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {strict!r}")
    if data_dir is not None and not isinstance(data_dir, (str, Path)):
        raise TypeError(f"data_dir must be a path or None, got {data_dir!r}")
    return spec.build(
        data_dir=None if data_dir is None else Path(data_dir).expanduser(),
        val_fraction=float(val_fraction),
        seed=seed,
        strict=strict,
        **resolved,
    )
