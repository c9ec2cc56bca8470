"""excite.visualize / `excite visualize`: labelled PNGs and GIFs of the expected size."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import excite
from excite.cli import main
from excite.errors import ExciteError

PIL = pytest.importorskip("PIL", reason="Pillow (comes with matplotlib, the train extra)")
from PIL import Image

pytest.importorskip("matplotlib", reason="the train extra")

DPI, PANEL, TITLE = 100, 2.0, 0.8  # docs/visualize.md: 2-inch panels at 100 dpi, 0.8-inch title band


def _stage_sizes(size: int) -> list[int]:
    """tiny_resnet: stem and max-pool /4, then stages at strides 1, 2, 2, 2."""
    return [max(1, size // (4 * 2**k)) for k in range(4)]


def _maps(*sizes: int) -> int:
    """Stages whose maps keep more than one position (the others show nothing)."""
    return sum(any(_stage_sizes(s)[k] > 1 for s in sizes) for k in range(4))


def _png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 0  # something is drawn
        return image.size


def _px(inches: float) -> int:
    return round(inches * DPI)


def test_video_run_strips_gifs_and_channel_gates(video_run: Path, tmp_path: Path) -> None:
    result = excite.visualize(video_run, tmp_path, samples=2, gate_samples=8)
    maps = _maps(32)  # 1x4x32x32 clips: stages at 8, 4, 2, 1 positions per side
    assert result.kind == "video" and len(result.maps) == maps == 3
    assert [p.name for p in result.files] == ["gates-sample0.png", "gates-sample0.gif", "gates-sample1.png",
                                             "gates-sample1.gif", "channel-gates.png"]
    # a strip: 4 frames (columns) x (input + one row per stage map)
    assert _png(tmp_path / "gates-sample0.png") == (_px(4 * PANEL), _px((1 + maps) * PANEL + TITLE))
    with Image.open(tmp_path / "gates-sample1.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 4  # one frame per clip frame
        assert gif.size == ((1 + maps) * 128, 128 + 20)
    # the SENet Fig. 6 plot: one panel per stage with channel gates (CBAM's M_c in all 4)
    assert _png(tmp_path / "channel-gates.png") == (_px(4 * 4.0), _px(3.0 + TITLE))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp file left


def test_video_grad_cam_and_overwrite(video_run: Path, tmp_path: Path) -> None:
    result = excite.visualize(video_run, tmp_path, samples=1, method="gradcam")
    assert [p.name for p in result.files] == ["gradcam-sample0.png", "gradcam-sample0.gif"]
    assert result.maps == ["Grad-CAM layer4"]
    assert _png(tmp_path / "gradcam-sample0.png") == (_px(4 * PANEL), _px(2 * PANEL + TITLE))
    before = (tmp_path / "gradcam-sample0.png").read_bytes()
    with pytest.raises(ExciteError, match="already holds gradcam-sample0.png.*--overwrite"):
        excite.visualize(video_run, tmp_path, samples=1, method="gradcam")
    assert (tmp_path / "gradcam-sample0.png").read_bytes() == before
    excite.visualize(video_run, tmp_path, samples=1, method="gradcam", overwrite=True)


def _image_folder(root: Path) -> Path:
    """Two classes of 32x32 grey images: a bright square top-left or bottom-right."""
    rng = np.random.default_rng(0)
    for label, (r, c) in (("topleft", (4, 4)), ("bottomright", (20, 20))):
        (root / label).mkdir(parents=True)
        for i in range(4):
            image = (rng.random((32, 32)) * 60).astype(np.uint8)
            image[r:r + 8, c:c + 8] = 230
            Image.fromarray(image).save(root / label / f"{i}.png")
    return root


def test_images_one_row_per_sample(tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "images")
    result = excite.visualize("tiny_resnet", tmp_path / "out", data="image-folder", data_dir=folder,
                              attention="cbam", samples=2)
    maps = _maps(32)
    assert result.kind == "image" and len(result.maps) == maps and result.samples == 2
    # rows: samples; columns: the image, then each stage's map
    assert _png(tmp_path / "out" / "gates.png") == (_px((1 + maps) * PANEL), _px(2 * PANEL + TITLE))
    assert (tmp_path / "out" / "channel-gates.png").is_file()
    excite.visualize("tiny_resnet", tmp_path / "out", data="image-folder", data_dir=folder,
                     samples=2, method="gradcam")  # no attention: Grad-CAM still works
    assert _png(tmp_path / "out" / "gradcam.png") == (_px(2 * PANEL), _px(2 * PANEL + TITLE))


def test_volumes_three_mid_slices(tmp_path: Path) -> None:
    options = {"size": "32x32x32", "train_size": 4, "val_size": 4}
    result = excite.visualize("tiny_resnet", tmp_path, data="shapes3d", data_options=options,
                              attention="cbam", samples=1, gate_samples=4)
    maps = _maps(32)
    assert result.kind == "volume"
    assert [p.name for p in result.files] == ["gates-sample0.png", "channel-gates.png"]
    # columns: axial, coronal, sagittal; rows: the volume, then each stage's map
    assert _png(tmp_path / "gates-sample0.png") == (_px(3 * PANEL), _px((1 + maps) * PANEL + TITLE))
    # SE has channel gates only: just the per-class gate plot
    se = excite.visualize("tiny_resnet", tmp_path / "se", data="shapes3d", data_options=options,
                          attention="se", samples=1, gate_samples=4)
    assert [p.name for p in se.files] == ["channel-gates.png"] and se.maps == []


def test_signals_from_tensors(tmp_path: Path) -> None:
    model = excite.create_model("tiny_resnet", attention="cbam", num_classes=3, in_channels=2,
                                spatial_dims=1).eval()
    x = torch.randn(2, 2, 64)
    result = excite.visualize(model, tmp_path, inputs=x, labels=[0, 2], class_names=["a", "b", "c"])
    maps = _maps(64)
    assert result.kind == "signal" and result.samples == 2 and len(result.maps) == maps == 4
    assert _png(tmp_path / "gates.png") == (_px((1 + maps) * 2 * PANEL), _px(2 * PANEL + TITLE))


def test_visualize_errors(tmp_path: Path) -> None:
    plain = excite.create_model("tiny_resnet", num_classes=3, in_channels=1, spatial_dims=2)
    x = torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="no attention maps to draw; use method='gradcam'"):
        excite.visualize(plain, tmp_path, inputs=x, labels=[0, 1])
    with pytest.raises(ValueError, match="method must be one of"):
        excite.visualize(plain, tmp_path, inputs=x, labels=[0, 1], method="saliency")
    with pytest.raises(ValueError, match="kind='video' or kind='volume'"):
        model3d = excite.create_model("tiny_resnet", attention="cbam", num_classes=2, in_channels=1)
        excite.visualize(model3d, tmp_path, inputs=torch.randn(1, 1, 4, 32, 32), labels=[0])
    with pytest.raises(ValueError, match="labels are required with inputs"):
        excite.visualize(plain, tmp_path, inputs=x)
    class Picky(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("sizes do not match\nmore detail")

    with pytest.raises(ValueError, match="cannot take samples of shape \\(1, 32, 32\\): sizes do not match$"):
        excite.visualize(Picky(), tmp_path, inputs=x, labels=[0, 1], method="gradcam")
    with pytest.raises(ValueError, match="out_dir is required"):
        excite.visualize(plain, inputs=x, labels=[0, 1], method="gradcam")
    with pytest.raises(ValueError, match="neither|run directory or a registered model name"):
        excite.visualize(str(tmp_path / "missing"), tmp_path)
    assert not list(tmp_path.iterdir())


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_visualize_a_run(video_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Path(shutil.copytree(video_run, tmp_path / "run"))
    assert main(["visualize", str(run), "--samples", "1", "--gate-samples", "4"]) == 0
    out = capsys.readouterr().out
    folder = run / "visualize-best"
    assert "gates pictures of 1 video sample(s)" in out
    for name in ("gates-sample0.png", "gates-sample0.gif", "channel-gates.png"):
        assert f"wrote {folder / name}" in out and (folder / name).is_file()
    err = _error(capsys, ["visualize", str(run), "--samples", "1", "--gate-samples", "4"])
    assert "already holds" in err and "--overwrite" in err
    assert "--data is required" in _error(capsys, ["visualize", "tiny_resnet", "--out", str(tmp_path / "o")])
    assert "neither a run directory nor a model name" in _error(capsys, ["visualize", str(tmp_path / "nope")])
    err = _error(capsys, ["visualize", "tiny_resnet", "--data", "shapes3d", "--data-option", "size=16x16x16",
                          "--data-option", "train_size=4", "--data-option", "val_size=4",
                          "--samples", "1", "--out", str(tmp_path / "o")])
    assert "no attention maps to draw" in err and "--method gradcam" in err
