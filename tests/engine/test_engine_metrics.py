"""ClassificationMeter against counts worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from excite.engine.metrics import ClassificationMeter


def test_accuracy_confusion_per_class_by_hand() -> None:
    # 3 classes; predictions are the argmax of each row.
    logits = torch.tensor([
        [5.0, 1.0, 0.0],  # pred 0, true 0  ok
        [0.0, 2.0, 1.0],  # pred 1, true 0
        [0.0, 3.0, 1.0],  # pred 1, true 1  ok
        [1.0, 0.0, 4.0],  # pred 2, true 1
        [0.0, 0.0, 9.0],  # pred 2, true 2  ok
    ])
    target = torch.tensor([0, 0, 1, 1, 2])
    meter = ClassificationMeter(3)
    meter.update(logits[:2], target[:2], loss=1.0)
    meter.update(logits[2:], target[2:], loss=2.0)
    assert meter.count == 5
    assert meter.accuracy == pytest.approx(3 / 5)
    assert meter.loss == pytest.approx((1.0 * 2 + 2.0 * 3) / 5)
    expected = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert torch.equal(meter.confusion, expected)
    assert meter.per_class_accuracy() == pytest.approx([0.5, 0.5, 1.0])
    assert meter.top5 is None  # fewer than 5 classes


def test_top5_counts_label_among_five_largest() -> None:
    logits = torch.tensor([
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 4 is 5th largest -> top-5 hit
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 5 is 6th largest -> miss
    ])
    meter = ClassificationMeter(6)
    meter.update(logits, torch.tensor([4, 5]))
    assert meter.top5 == pytest.approx(0.5)
    assert meter.accuracy == 0.0


def test_class_without_samples_is_nan_and_bad_shapes_raise() -> None:
    meter = ClassificationMeter(3)
    meter.update(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]))
    acc = meter.per_class_accuracy()
    assert acc[0] == 1.0 and math.isnan(acc[1]) and math.isnan(acc[2])
    with pytest.raises(ValueError, match="logits must have shape"):
        meter.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target must have shape"):
        meter.update(torch.zeros(2, 3), torch.tensor([0]))
