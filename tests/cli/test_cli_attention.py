"""`--attention` from the command line to the module: one factory, None == "none"."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from torch import nn

from excite.cli import main
from excite.engine import builders
from excite.layers import CBAM, SqueezeExcite

TINY = ["--data-option", "train_size=4", "--data-option", "val_size=2",
        "--data-option", "size=16x16", "--data-option", "radius=2,3", "--data-option", "frames=4",
        "--batch-size", "2", "--epochs", "1", "--quiet", "--device", "cpu"]


@pytest.fixture
def built_models(monkeypatch):
    models: list[nn.Module] = []
    create = builders.create_model

    def spy(*args, **kwargs):
        models.append(create(*args, **kwargs))
        return models[-1]

    monkeypatch.setattr(builders, "create_model", spy)
    return models


def test_train_x3d_with_attention_none_builds_no_attention(tmp_path: Path, built_models, capsys) -> None:
    assert main(["train", "--model", "x3d_xs", "--attention", "none", "--out", str(tmp_path), *TINY]) == 0
    (model,) = built_models
    assert not any(isinstance(m, (SqueezeExcite, CBAM)) for m in model.modules())
    (run,) = tmp_path.iterdir()
    assert yaml.safe_load((run / "config.yaml").read_text())["attention"] == "none"


def test_attention_options_and_case_reach_the_module(tmp_path: Path, built_models, capsys) -> None:
    argv = ["train", "--model", "tiny_resnet", "--attention", "CBAM", "--attention-option",
            "variant=official", "--attention-option", "reduction=4", "--out", str(tmp_path), *TINY]
    assert main(argv) == 0
    (model,) = built_models
    cbams = [m for m in model.modules() if isinstance(m, CBAM)]
    assert cbams and all(m.variant == "official" for m in cbams)
    assert cbams[0].channel.fc1.out_features == 16 // 4
    (run,) = tmp_path.iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["attention"] == "cbam" and run.name.startswith("tiny_resnet-cbam-")
    assert config["attention_kwargs"] == {"variant": "official", "reduction": 4}


def test_unknown_attention_option_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["train", "--attention", "se", "--attention-option", "kernel_size=3",
                 "--out", str(tmp_path), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "'se' got an unexpected keyword argument 'kernel_size'" in err
    assert not list(tmp_path.iterdir())
