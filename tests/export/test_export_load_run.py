"""excite.load_run: a run directory back as the model it trained, or a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import excite
from excite.data import load_splits
from excite.errors import ExciteError


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.mark.parametrize("checkpoint", ["best", "last"])
def test_load_run_rebuilds_the_trained_model(tiny_run: Path, checkpoint: str) -> None:
    model, config = excite.load_run(tiny_run, checkpoint=checkpoint)
    assert not model.training and not any(m.training for m in model.modules())
    assert config.model == "tiny_resnet" and config.attention == "cbam"
    # the model the run describes: CBAM in every block, 1 input channel, 3D, 4 classes
    assert isinstance(model.layer1[0].attention, excite.CBAM)
    assert (model.in_channels, model.spatial_dims, model.num_classes) == (1, 3, 4)
    saved = load_file(str(tiny_run / f"{checkpoint}.safetensors"))
    state = model.state_dict()
    assert sorted(state) == sorted(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


def test_loaded_best_weights_reproduce_the_recorded_accuracy(tiny_run: Path) -> None:
    model, config = excite.load_run(tiny_run)
    splits = load_splits(config.data, seed=config.seed, val_fraction=config.val_fraction,
                         **config.data_options)
    x = torch.stack([splits.val[i][0] for i in range(len(splits.val))])
    y = torch.tensor([int(splits.val[i][1]) for i in range(len(splits.val))])
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert accuracy == pytest.approx(summary["best_val_acc"])


def test_load_run_errors_name_what_is_wrong(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint must be 'best' or 'last', got 'final'"):
        excite.load_run(tiny_run, checkpoint="final")
    with pytest.raises(TypeError, match="run_dir must be a path"):
        excite.load_run(3)
    with pytest.raises(ExciteError, match="run directory not found"):
        excite.load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExciteError, match="not an excite run directory"):
        excite.load_run(tmp_path / "empty")


def test_load_run_without_weights_lists_what_is_there(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    (run / "best.safetensors").unlink()
    with pytest.raises(ExciteError, match=r"no best weights in .*best\.safetensors.*available: last"):
        excite.load_run(run)
    (run / "last.safetensors").unlink()
    with pytest.raises(ExciteError, match="never finished an epoch"):
        excite.load_run(run, checkpoint="last")


@pytest.mark.parametrize("where", ["summary.json", "config.yaml"])
def test_load_run_refuses_a_custom_model(tiny_run: Path, tmp_path: Path, where: str) -> None:
    run = _copy(tiny_run, tmp_path)
    if where == "summary.json":
        summary = json.loads((run / where).read_text())
        summary["custom_model"] = "MyNet"
        (run / where).write_text(json.dumps(summary))
    else:
        config = yaml.safe_load((run / where).read_text())
        config["custom_model"] = "MyNet"
        (run / where).write_text(yaml.safe_dump(config))
    with pytest.raises(ExciteError, match=r"trained on a custom model \(MyNet\).*cannot be rebuilt"):
        excite.load_run(run)


def test_load_run_weights_that_do_not_fit(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["attention"] = "se"  # CBAM weights cannot load into an SE model
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ExciteError, match="do not fit the model"):
        excite.load_run(run)
    (run / "summary.json").unlink()
    with pytest.raises(ExciteError, match="no summary.json"):
        excite.load_run(run)


def test_a_run_on_custom_data_still_loads(tiny_run: Path, tmp_path: Path) -> None:
    """fit(config, splits=...) records custom_data; the registered model rebuilds from the
    summary's classes and input shape."""
    run = _copy(tiny_run, tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["custom_data"] = "blobs"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    model, loaded = excite.load_run(run)
    assert loaded.model == "tiny_resnet" and model.num_classes == 4
    with pytest.raises(ValueError, match=r"custom data \(blobs\).*pass data="):
        excite.visualize(run, tmp_path / "pictures")


class _MyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.AdaptiveAvgPool3d(1),
                                        torch.nn.Flatten(), torch.nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_run_of_fit_with_a_custom_model_is_refused_by_name(tmp_path: Path) -> None:
    from excite.engine import TrainConfig, fit

    config = TrainConfig(epochs=1, batch_size=8, device="cpu", quiet=True, out=str(tmp_path), name="mine",
                         data_options={"train_size": 8, "val_size": 4, "size": "16x16", "frames": 4,
                                       "radius": "2,3"})
    fit(config, model=_MyNet(), log=lambda line: None)
    with pytest.raises(ExciteError, match=r"custom model \(_MyNet\).*mine/best\.safetensors"):
        excite.load_run(tmp_path / "mine")
