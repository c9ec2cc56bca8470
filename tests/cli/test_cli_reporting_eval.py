"""`excite eval` output naming (issue 13, item 2): a folder per checkpoint and options,
never an overwrite of an evaluation made with other options, the options recorded in
metrics.json, and the confusion matrix titled with run, checkpoint, data and accuracy."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

import pytest
import torch

from excite.cli import main
from excite.engine import reports

OPTIONS = {"train_size": 16, "val_size": 8, "size": "16x16", "radius": "2,3", "frames": 4}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory as `excite train` leaves it, for eval: config.yaml and weights
    (untrained ones: the names and options matter here, not the accuracy)."""
    from safetensors.torch import save_file

    from excite.engine.config import TrainConfig, dump_yaml
    from excite.models import create_model

    run = tmp_path_factory.mktemp("runs") / "r"
    run.mkdir()
    config = TrainConfig(batch_size=8, device="cpu", data_options={**OPTIONS, "cache": True}, name="r")
    (run / "config.yaml").write_text(dump_yaml(config))
    for seed, checkpoint in enumerate(("best", "last")):
        torch.manual_seed(seed)
        model = create_model("tiny_resnet", attention="cbam", num_classes=4, in_channels=1, spatial_dims=3)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / f"{checkpoint}.safetensors"))
    return run


def _eval(run, *args: str) -> tuple[dict, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["eval", str(run), *args]) == 0
    folder = stdout.getvalue().strip().splitlines()[-1].removeprefix("reports written to ")
    return json.loads((run / folder.split("/")[-1] / "metrics.json").read_text()), folder.split("/")[-1]


def _digest(changes: dict) -> str:
    return hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]


def test_eval_names_folders_by_checkpoint_and_options_and_never_overwrites(run):
    metrics, name = _eval(run, "--device", "cpu")
    assert name == "eval-moving-shapes-best"
    assert metrics["options"] == {
        "data": "moving-shapes", "data_dir": None,
        "data_options": {**OPTIONS, "cache": True}, "val_subset": None,
        "checkpoint": "best", "batch_size": 8, "device": "cpu",
        "model_kwargs": {}, "attention_kwargs": {},
    }
    clean = (run / name / "metrics.json").read_bytes()

    # other data options: their own folder, named by a hash of what changed
    noisy, noisy_name = _eval(run, "--device", "cpu", "--data-option", "noise=0.3")
    assert noisy_name == f"eval-moving-shapes-best-{_digest({'data_options': {'noise': 0.3}})}"
    assert noisy["options"]["data_options"]["noise"] == 0.3
    assert (run / name / "metrics.json").read_bytes() == clean  # the clean evaluation is kept

    # same data, another batch size: the name is taken by other options, so -2
    other, other_name = _eval(run, "--device", "cpu", "--batch-size", "3")
    assert other_name == "eval-moving-shapes-best-2" and other["options"]["batch_size"] == 3
    assert (run / name / "metrics.json").read_bytes() == clean
    assert other["accuracy"] == pytest.approx(json.loads(clean)["accuracy"])  # same weights, same data

    # repeating an evaluation reuses its folder; the last weights get their own
    assert _eval(run, "--device", "cpu", "--batch-size", "3")[1] == "eval-moving-shapes-best-2"
    assert _eval(run, "--device", "cpu")[1] == name
    last, last_name = _eval(run, "--device", "cpu", "--checkpoint", "last")
    assert last_name == "eval-moving-shapes-last" and last["options"]["checkpoint"] == "last"
    assert sorted(p.name for p in run.glob("eval-*")) == sorted(
        [name, noisy_name, other_name, last_name])


def test_eval_device_defaults_to_auto(run):
    metrics, _ = _eval(run, "--batch-size", "5")
    assert metrics["options"]["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_model_options_change_the_name_and_must_fit_the_weights(run, capsys):
    metrics, name = _eval(run, "--device", "cpu", "--attention-option", "impl=reference")
    assert name == f"eval-moving-shapes-best-{_digest({'attention_kwargs': {'impl': 'reference'}})}"
    assert metrics["options"]["attention_kwargs"] == {"impl": "reference"}
    assert main(["eval", str(run), "--device", "cpu", "--attention-option", "reduction=4"]) == 2
    assert "do not fit the model" in capsys.readouterr().err


def test_confusion_matrix_is_titled_with_run_checkpoint_data_and_accuracy(run, monkeypatch):
    pytest.importorskip("matplotlib")
    titles: list[str] = []
    real = reports.plot_confusion

    def capture(path, confusion, class_names, title=""):
        titles.append(title)
        return real(path, confusion, class_names, title)

    monkeypatch.setattr(reports, "plot_confusion", capture)
    metrics, name = _eval(run, "--device", "cpu", "--checkpoint", "last")
    (title,) = titles
    assert title.startswith("r: last weights on moving-shapes")
    assert f"accuracy {metrics['accuracy']:.4f} on {metrics['num_samples']} samples" in title
    assert (run / name / "confusion.png").read_bytes()[:4] == b"\x89PNG"
