"""TrainConfig validation, YAML round trip, learning-rate schedule formulas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from excite.engine.config import TrainConfig, dump_yaml, load_yaml
from excite.engine.schedule import lr_factor
from excite.errors import ExciteError


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, lr=0.5, data_options={"num_train": 10}, amp="bf16")
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(config))
    assert TrainConfig.from_dict(load_yaml(path)) == config


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1, got 0"),
        ({"lr": -1}, "lr must be a number > 0"),
        ({"optimizer": "adam"}, "optimizer must be one of sgd, adamw; got 'adam'"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"amp": "fp8"}, "amp must be one of bf16, fp16"),
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"spatial_dims": 4}, "spatial_dims must be 1, 2, 3"),
        ({"name": "a/b"}, "name must be a plain folder name"),
        ({"epoch": 3}, "unknown config key 'epoch'; valid keys: .*epochs"),
    ],
)
def test_bad_values_name_the_field(values: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(values)


def test_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="batch_size must be an int >= 1, got 2.5"):
        TrainConfig.from_dict({"batch_size": 2.5})


def test_attention_none_spellings() -> None:
    assert TrainConfig.from_dict({"attention": None}).attention == "none"
    assert TrainConfig.from_dict({"attention": "None"}).attention == "none"


def test_bad_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ExciteError, match="must hold a mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ExciteError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")


def test_lr_schedules_follow_their_formulas() -> None:
    kw = dict(total_steps=100, warmup_steps=0, steps_per_epoch=10, step_epochs=3)
    for t in (0, 25, 50, 99, 100):
        assert lr_factor(t, schedule="cosine", **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * t / 100)))
    # step: x0.1 every 3 epochs of 10 steps
    assert lr_factor(29, schedule="step", **kw) == pytest.approx(1.0)
    assert lr_factor(30, schedule="step", **kw) == pytest.approx(0.1)
    assert lr_factor(65, schedule="step", **kw) == pytest.approx(0.01)
    assert lr_factor(77, schedule="constant", **kw) == 1.0
    # linear warm-up over 4 steps multiplies the schedule
    warm = dict(kw, warmup_steps=4)
    assert lr_factor(0, schedule="constant", **warm) == pytest.approx(0.25)
    assert lr_factor(3, schedule="constant", **warm) == pytest.approx(1.0)
    assert lr_factor(1, schedule="cosine", **warm) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi / 100)))
