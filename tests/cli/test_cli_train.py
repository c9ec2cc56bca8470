"""`excite train | eval | compare` end to end through excite.cli.main on tiny configs."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from excite.cli import main
from excite.engine import Callback
from excite.engine import train as train_module
from excite.engine.config import RESUME_OVERRIDABLE

# 16 train / 8 val clips of 1x4x16x16: a train or eval run takes seconds
TINY = ["--data-option", "train_size=16", "--data-option", "val_size=8",
        "--data-option", "size=16x16", "--data-option", "radius=2,3", "--data-option", "frames=4",
        "--batch-size", "8", "--quiet", "--device", "cpu"]
KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return [{k: r[k] for k in KEYS} for r in csv.DictReader(handle)]


def _error(capsys, argv: list[str]) -> str:
    """Run argv, expect exit 2 and exactly one line on stderr; return it."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


class _StopAfter(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_train_eval_interrupt_resume_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"epochs": 5, "lr": 0.01, "seed": 3}))
    # --config sets lr and seed; the --epochs flag overrides the file's epochs
    assert main(["train", "--config", str(config), "--epochs", "2", "--out", str(tmp_path),
                 "--name", "straight", *TINY]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy:" in out and "chance 0.2500" in out
    straight = tmp_path / "straight"
    saved = yaml.safe_load((straight / "config.yaml").read_text())
    assert (saved["epochs"], saved["lr"], saved["seed"]) == (2, 0.01, 3)
    assert saved["data_options"]["train_size"] == 16

    # eval: metrics, per-class table, confusion matrix (rows = true class) over all 8 val clips
    assert main(["eval", str(straight)]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "top-5" not in out  # 4 classes: no top-5
    ev = straight / "eval-moving-shapes-best"
    metrics = json.loads((ev / "metrics.json").read_text())
    with open(ev / "confusion.csv") as handle:
        confusion = [[int(v) for k, v in row.items() if k != "true"] for row in csv.DictReader(handle)]
    assert sum(map(sum, confusion)) == metrics["num_samples"] == 8
    assert metrics["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(4)) / 8)
    with open(ev / "per_class.csv") as handle:
        per_class = list(csv.DictReader(handle))
    assert [r["class"] for r in per_class] == ["right", "left", "down", "up"]
    assert (ev / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((straight / "summary.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["best_val_acc"])  # best weights by default

    # Ctrl-C after step 1 (of 4): exit 130, resumable state; --resume ends where `straight` did
    original_init = train_module.Trainer.__init__

    def init_with_stop(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.callbacks.append(_StopAfter(1))

    monkeypatch.setattr(train_module.Trainer, "__init__", init_with_stop)
    argv = ["train", "--config", str(config), "--epochs", "2", "--out", str(tmp_path), "--name", "resumed", *TINY]
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(train_module.Trainer, "__init__", original_init)
    resumed = tmp_path / "resumed"
    assert json.loads((resumed / "summary.json").read_text())["status"] == "interrupted"
    assert _error(capsys, ["train", "--resume", str(resumed), "--lr", "0.5"]).endswith(
        f"only {', '.join(sorted(RESUME_OVERRIDABLE))} may change")
    assert {"device", "epochs", "out", "quiet", "workers"} <= RESUME_OVERRIDABLE
    assert main(["train", "--resume", str(resumed)]) == 0
    capsys.readouterr()
    assert _rows(resumed) == _rows(straight)

    # errors on existing runs
    best = straight / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    assert "truncated or corrupt" in _error(capsys, ["eval", str(straight)])
    assert "is 3D" in _error(capsys, ["eval", str(resumed), "--data", "fashion-mnist",
                                      "--data-option", "train_size=10", "--data-option", "val_size=10"])


@pytest.mark.slow
def test_compare_trains_every_variant_and_skips_finished_runs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", "--attention", "none,se", "--seeds", "2", "--epochs", "1", "--out", str(out), *TINY]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| attention | val acc (mean ± std)" in text
    for name in ("compare.md", "compare.csv", "compare.png"):
        assert (out / name).is_file()
    with open(out / "compare.csv") as handle:
        rows = {r["attention"]: r for r in csv.DictReader(handle)}
    assert list(rows) == ["none", "se"]
    for attention, row in rows.items():
        summaries = [json.loads((out / f"{attention}-s{s}" / "summary.json").read_text()) for s in (0, 1)]
        accs = [s["final_val_acc"] for s in summaries]
        assert float(row["acc_mean"]) == pytest.approx((accs[0] + accs[1]) / 2, abs=1e-5)
        # sample std of two values: |a - b| / sqrt(2)
        assert float(row["acc_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5, abs=1e-5)
        assert int(row["params"]) == summaries[0]["params"] > 0
        assert float(row["samples_per_s"]) == pytest.approx(
            statistics.fmean(s["train_samples_per_s"] for s in summaries), rel=1e-4)
    assert int(rows["se"]["params"]) > int(rows["none"]["params"])  # SE adds its MLP
    # second call: every run is reused
    assert main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4


def test_fashion_mnist_model_rank_comes_from_the_data(tmp_path: Path, capsys) -> None:
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    assert main(["train", "--data", "fashion-mnist", "--model", "tiny_resnet", "--attention", "eca",
                 "--data-option", "train_size=40", "--data-option", "val_size=20", "--epochs", "1",
                 "--batch-size", "20", "--quiet", "--out", str(tmp_path), "--name", "fm"]) == 0
    summary = json.loads((tmp_path / "fm" / "summary.json").read_text())
    assert summary["input_shape"] == [1, 28, 28]
    assert summary["num_classes"] == 10 and summary["final_val_top5"] is not None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--model", "resnet9000"], "unknown model 'resnet9000'; valid models: "),
        (["train", "--attention", "nope"], "unknown attention 'nope'; valid attention names: none, "),
        (["train", "--data", "imagenet"], "unknown dataset 'imagenet'"),
        (["compare", "--attention", "none,nope", "--seeds", "1"], "unknown attention 'nope'"),
        (["compare", "--attention", "se,se"], "attention list has duplicates"),
        (["compare", "--seeds", "0"], "--seeds must be >= 1"),
        (["train", "--epochs", "0"], "epochs must be an int >= 1, got 0"),
        (["train", "--config", "/nonexistent/c.yaml"], "config file not found"),
        (["train", "--resume", "/nonexistent/run"], "run directory not found"),
        (["eval", "/nonexistent/run"], "run directory not found"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv: list[str], expected: str, capsys, tmp_path: Path) -> None:
    err = _error(capsys, [*argv, "--out", str(tmp_path)] if argv[0] != "eval" else argv)
    assert expected in err
    if "valid models" in expected:
        assert "tiny_resnet" in err
    if "valid attention" in expected:
        assert "cbam" in err and "eca" in err
    assert not list(tmp_path.iterdir())  # nothing was written


def test_model_that_does_not_fit_the_data_is_refused_before_training(tmp_path: Path, capsys) -> None:
    err = _error(capsys, ["train", "--spatial-dims", "2", "--out", str(tmp_path), *TINY])
    assert "model is 2D (spatial_dims=2) but dataset 'moving-shapes' is 3D" in err
    err = _error(capsys, ["train", "--model-option", "in_channels=3", "--out", str(tmp_path), *TINY])
    assert "in_channels=3 but dataset 'moving-shapes' has 1 channel" in err
    assert not list(tmp_path.iterdir())


def test_run_directory_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "plain").mkdir()
    assert "not an excite run directory" in _error(capsys, ["eval", str(tmp_path / "plain")])
    assert "not an excite run directory" in _error(capsys, ["train", "--resume", str(tmp_path / "plain")])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: 1\n")  # (--resume restarts such a run: test_cli_reliability_runs.py)
    assert "no best weights" in _error(capsys, ["eval", str(run)])
    assert "already exists; continue it with --resume" in _error(
        capsys, ["train", "--out", str(tmp_path), "--name", "run"])
    assert "--config cannot be combined with --resume" in _error(
        capsys, ["train", "--resume", str(run), "--config", str(run / "config.yaml")])


def test_default_run_names_do_not_overwrite_earlier_runs(tmp_path: Path) -> None:
    from excite.engine import RunDirectory, TrainConfig

    base = tmp_path / TrainConfig(out=str(tmp_path)).run_name  # what `excite train` claims
    assert RunDirectory.claim(base, numbered=True).path == tmp_path / "tiny_resnet-cbam-moving-shapes-s0"
    assert RunDirectory.claim(base, numbered=True).path == tmp_path / "tiny_resnet-cbam-moving-shapes-s0-2"


def test_demo_data_options_apply_only_to_their_dataset_and_yield_to_flags(tmp_path: Path) -> None:
    from excite.cli import build_parser
    from excite.cli.train import build_config
    from excite.engine.config import DEFAULT_DATA_OPTIONS

    parser = build_parser()
    demo = build_config(parser.parse_args(["train"]))
    assert demo.data == "moving-shapes" and demo.data_options == DEFAULT_DATA_OPTIONS["moving-shapes"]
    mine = build_config(parser.parse_args(["train", "--data-option", "train_size=64"]))
    assert mine.data_options["train_size"] == 64 and mine.data_options["val_size"] == 400
    fm = build_config(parser.parse_args(["train", "--data", "fashion-mnist"]))
    assert fm.data_options == {}
