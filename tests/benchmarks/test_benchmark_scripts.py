"""The benchmark scripts' logic on tiny configurations (their timings are never asserted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _checkout_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]


def test_gpu_script_dry_run_on_cpu(capsys) -> None:
    from benchmarks import gpu

    assert gpu.main(["--tiny", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    modules = [r for r in rows if len(r) == 7 and r[0] in ("se", "cbam", "eca")]
    # 2 shapes x 3 modules x (fp32, bf16) x (contiguous, channels_last) x 3 paths
    assert len(modules) == 2 * 3 * 2 * 2 * 3
    for r in modules:
        if r[4] == "triton":  # CPU: no Triton rows
            assert r[5] == "-"
        else:
            assert float(r[5]) > 0
    training = [r for r in rows if len(r) == 4 and r[0] in ("none", "se", "cbam", "eca")]
    assert [r[0] for r in training] == ["none", "se", "cbam", "eca"] * 2
    assert all(float(r[1]) > 0 for r in training)
    assert re.search(r"## tiny_resnet training", out)


def test_gpu_script_refuses_cuda_without_a_device(capsys) -> None:
    import torch

    from benchmarks import gpu

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit):
        gpu.main(["--device", "cuda"])
    assert "CUDA is not available" in capsys.readouterr().err


def test_excite_bench_lists_every_suite() -> None:
    from excite.cli import bench

    for suite in bench.SUITES:
        assert (ROOT / "benchmarks" / f"{suite}.py").is_file(), suite


def test_training_benchmark_with_the_floor_variant(capsys) -> None:
    """One repeat on tiny_resnet: a row per variant with every overhead column, the
    attention-free model at +0.0 %; --floor replaces every SE module by x * w (one
    (C, 1, 1) parameter per block, nothing of SE left)."""
    import excite
    from benchmarks import training

    assert training.main(["--models", "tiny_resnet", "--repeats", "1", "--warmup", "0",
                          "--impls", "auto", "--floor"]) == 0
    rows = [r for r in _rows(capsys.readouterr().out) if r[0] == "tiny_resnet"]
    assert [(r[2], r[3]) for r in rows] == [("none", "-"), ("floor", "-"), ("se", "auto"), ("cbam", "auto")]
    assert all(len(r) == 9 for r in rows)
    assert rows[0][5] == rows[0][7] == rows[0][8] == "+0.0%"

    model = training._floor_model(excite.create_model("tiny_resnet", attention="se", spatial_dims=2), 2)
    floors = [m for m in model.modules() if isinstance(m, training._Floor)]
    assert len(floors) == 4 and [f.weight.shape for f in floors] == [(c, 1, 1) for c in (16, 32, 64, 128)]
    assert not any(isinstance(m, excite.layers.SqueezeExcite) for m in model.modules())
