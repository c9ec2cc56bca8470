"""The one evaluation loop against cross-entropy and accuracy written out in float64.

``evaluation_loop`` serves ``excite eval`` and the validation after every epoch, so these
tests pin both: the loss is ``mean_i(logsumexp(z_i) - z_i[y_i])``, the accuracy the share
of ``argmax z_i == y_i``, the confusion matrix counts (true, predicted) pairs; ranks split
the samples r, r + N, ... and their sums add up to the whole.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from engine_helpers import BlobDataset, TinyNet, blob_splits
from excite.engine import TrainConfig, evaluate, fit
from excite.engine.checkpoint import load_model_weights
from excite.engine.distributed import DistContext
from excite.engine.evaluate import evaluation_loop

K = 4


def _reference(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(mean cross-entropy, accuracy, confusion) in float64, one sample at a time."""
    z = logits.double()
    losses = [float(torch.logsumexp(z[i], 0) - z[i, int(y[i])]) for i in range(len(y))]
    pred = [int(z[i].argmax()) for i in range(len(y))]
    confusion = torch.zeros(K, K, dtype=torch.int64)
    for t, p in zip(y.tolist(), pred):
        confusion[t, p] += 1
    return sum(losses) / len(y), sum(p == t for p, t in zip(pred, y.tolist())) / len(y), confusion


def _linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, K))


def _all(dataset: BlobDataset, idx: range | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    idx = idx if idx is not None else range(len(dataset))
    return dataset.x[list(idx)], dataset.y[list(idx)]


def _float64_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.double().eval()(x.double())


@pytest.mark.parametrize("batch_size", [1, 3, 64])  # 10 samples: full, ragged and one batch
def test_loop_equals_the_written_out_loss_accuracy_and_confusion(batch_size: int) -> None:
    data = BlobDataset(10, K, seed=2)
    model = _linear_model()
    meter = evaluation_loop(model, data, num_classes=K, batch_size=batch_size, device=torch.device("cpu"))
    loss, acc, confusion = _reference(_float64_logits(_linear_model(), data.x), data.y)
    assert meter.count == 10
    assert meter.loss == pytest.approx(loss, rel=1e-6)
    assert meter.accuracy == acc
    assert torch.equal(meter.confusion, confusion)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_take_every_nth_sample_and_add_up_to_the_whole(world_size: int) -> None:
    data = BlobDataset(10, K, seed=2)
    ref_logits = _float64_logits(_linear_model(), data.x)
    total_loss, counts, confusion = 0.0, 0, torch.zeros(K, K, dtype=torch.int64)
    for rank in range(world_size):
        ctx = DistContext(rank=rank, world_size=world_size)  # no process group: no all-reduce
        meter = evaluation_loop(_linear_model(), data, num_classes=K, batch_size=2,
                                device=torch.device("cpu"), dist=ctx)
        mine = range(rank, 10, world_size)
        loss, _, conf = _reference(ref_logits[list(mine)], data.y[list(mine)])
        assert meter.count == len(mine)
        assert meter.loss == pytest.approx(loss, rel=1e-6)
        assert torch.equal(meter.confusion, conf)
        total_loss += meter.loss_sum
        counts += meter.count
        confusion += meter.confusion
    loss, _, conf = _reference(ref_logits, data.y)
    assert counts == 10 and torch.equal(confusion, conf)
    assert total_loss / counts == pytest.approx(loss, rel=1e-6)


def test_evaluate_leaves_the_global_rng_alone() -> None:
    """The loader has its own generator: evaluating must not shift the caller's random stream."""
    model = _linear_model()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    evaluate(model, BlobDataset(6, K), num_classes=K, batch_size=4)
    assert torch.equal(torch.rand(3), expected)


def test_validation_after_training_is_the_eval_of_the_last_weights(tmp_path: Path) -> None:
    splits = blob_splits(48, 20)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, quiet=True, device="cpu", seed=1)
    fit(config, splits=splits, model=TinyNet(), run_dir=tmp_path / "run", log=lambda m: None)
    with open(tmp_path / "run" / "metrics.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    model = TinyNet()
    load_model_weights(model, tmp_path / "run" / "last.safetensors")
    loss, acc, _ = _reference(_float64_logits(model, splits.val.x), splits.val.y)
    assert float(last["val_loss"]) == pytest.approx(loss, rel=1e-5)  # metrics.csv keeps 6 digits
    assert float(last["val_acc"]) == pytest.approx(acc, abs=1e-6)
    model = TinyNet()
    load_model_weights(model, tmp_path / "run" / "last.safetensors")
    result = evaluate(model, splits.val, num_classes=K, batch_size=7)  # what `excite eval` runs
    assert result.accuracy == pytest.approx(acc, abs=1e-12)
    assert result.loss == pytest.approx(loss, rel=1e-6)
