"""Turn a :class:`TrainConfig` into data splits and a model, validating names and fit.

Unknown model, attention and dataset names raise ``ValueError`` listing the valid
ones; a model whose input channels, rank or number of classes does not fit the data
raises before training starts.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from excite.data import list_datasets, load_splits
from excite.engine.config import TrainConfig
from excite.models import create_model, list_models
from excite.profiling import profile


@dataclasses.dataclass
class Splits:
    """Train and validation datasets plus the dataset's ``info`` (DatasetInfo-like).

    Attributes:
        train: the training split.
        val: the validation split.
        info: the dataset's ``DatasetInfo`` (name, classes, channels, rank, ...).
        data_key: the config fields :func:`build_splits` built them from (see
            :func:`data_key`); ``None`` for splits made some other way, which a run
            records as custom data.
    """

    train: Dataset
    val: Dataset
    info: Any
    data_key: dict[str, Any] | None = None


#: the TrainConfig fields that decide a run's data
DATA_FIELDS = ("data", "data_dir", "data_options", "val_fraction", "seed", "strict", "train_subset",
               "val_subset")


def data_key(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` that decide its data (:data:`DATA_FIELDS`)."""
    values = config.to_dict()
    return {key: values[key] for key in DATA_FIELDS}


def check_names(config: TrainConfig) -> None:
    """Raise ``ValueError`` for an unknown model or dataset name (the attention name and
    options were resolved when the config was built)."""
    datasets = list(list_datasets())
    if config.data not in datasets:
        raise ValueError(f"unknown dataset {config.data!r}; valid datasets: {', '.join(datasets)}")
    models = list(list_models())
    if config.model not in models:
        raise ValueError(f"unknown model {config.model!r}; valid models: {', '.join(models)}")


def build_splits(config: TrainConfig) -> Splits:
    """Load the configured dataset and apply ``train_subset`` / ``val_subset``."""
    splits = load_splits(
        config.data,
        data_dir=config.data_dir,
        val_fraction=config.val_fraction,
        seed=config.seed,
        strict=config.strict,
        **config.data_options,
    )
    return Splits(
        train=subset(splits.train, config.train_subset, seed=config.seed, name="train_subset"),
        val=subset(splits.val, config.val_subset, seed=config.seed + 1, name="val_subset"),
        info=splits.info,
        data_key=data_key(config),
    )


def subset(dataset: Dataset, size: int | None, *, seed: int, name: str = "size") -> Dataset:
    """A seeded random subset of ``size`` samples (kept in index order); ``None`` or the
    split's own size: all of it.

    Raises:
        ValueError: ``size`` is larger than the split (the message calls it ``name``).
    """
    n = len(dataset)  # type: ignore[arg-type]
    if size is not None and size > n:
        raise ValueError(f"{name} {size} is larger than the split it is drawn from ({n} samples)")
    if size is None or size == n:
        return dataset
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(n, generator=gen)[:size].sort().values.tolist()
    return Subset(dataset, indices)


def build_model(config: TrainConfig, info: Any) -> nn.Module:
    """Create the configured model for a dataset (classes, channels and rank from ``info``)."""
    spatial_dims = config.spatial_dims if config.spatial_dims is not None else info.spatial_dims
    kwargs: dict[str, Any] = {
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "spatial_dims": spatial_dims,
    }
    kwargs.update(config.model_kwargs)  # explicit model options win (checked against the data later)
    return create_model(config.model, attention=config.attention_factory(), **kwargs)


def check_model_fits(model: nn.Module, info: Any, sample: torch.Tensor | None = None) -> None:
    """Raise ``ValueError`` when ``model`` cannot take the dataset's samples.

    Compares the model's ``in_channels`` / ``spatial_dims`` attributes (when it has them)
    with the data, then runs one sample through a copy of the model in eval mode and
    checks the output is (1, num_classes).
    """
    shape = tuple(info.sample_shape)
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None and in_channels != info.in_channels:
        raise ValueError(
            f"model takes in_channels={in_channels} but dataset {info.name!r} has "
            f"{info.in_channels} channel(s) (sample shape {shape})"
        )
    spatial_dims = getattr(model, "spatial_dims", None)
    if spatial_dims is not None and spatial_dims != info.spatial_dims:
        raise ValueError(
            f"model is {spatial_dims}D (spatial_dims={spatial_dims}) but dataset {info.name!r} "
            f"is {info.spatial_dims}D (sample shape {shape}); leave spatial_dims unset to "
            "take the dataset's"
        )
    if sample is None:
        return
    probe = copy.deepcopy(model).cpu().eval()
    try:
        with torch.no_grad():
            out = probe(sample.unsqueeze(0).float().cpu())
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(
            f"model cannot take samples of shape {tuple(sample.shape)} from dataset "
            f"{info.name!r}: {first}"
        ) from exc
    if tuple(out.shape) != (1, info.num_classes):
        raise ValueError(
            f"model outputs shape {tuple(out.shape)} per sample but dataset {info.name!r} "
            f"has {info.num_classes} classes"
        )


def profile_model(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Parameter count and multiply-adds per sample (via :func:`excite.profiling.profile`).

    Runs on a copy, with the RNG state restored, so the real model and the run's random
    stream are untouched. The profiler runs a training-mode pass, so it gets a batch of 2
    (BatchNorm needs more than one value per channel); multiply-adds of convolutions and
    linear layers are linear in the batch, so MACs per sample = MACs(batch 2) / 2.
    ``macs`` is ``None`` when the profiler is unavailable or fails.
    """
    params = sum(p.numel() for p in model.parameters())
    macs = None
    try:
        probe = copy.deepcopy(model).cpu().eval()
        rng = torch.get_rng_state()
        try:
            with torch.no_grad():
                result = profile(probe, (2, *input_shape))
        finally:
            torch.set_rng_state(rng)
        macs = int(result.macs) // 2
        params = int(result.params)
    except (ImportError, AttributeError, RuntimeError):
        pass
    return {"params": params, "macs": macs}
