"""Folder datasets on tiny files the tests write: images (Pillow), videos (PyAV) and
frame folders, volumes (.npy/.npz, NIfTI); bad files, bad layouts, splits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from excite.data import DataWarning, load_splits
from excite.errors import ExciteError

Image = pytest.importorskip("PIL.Image")


def _grey(value: int, h: int = 6, w: int = 8) -> np.ndarray:
    return (np.arange(h * w, dtype=np.int64).reshape(h, w) + value).astype(np.uint8)


def make_images(root: Path, classes=("cat", "dog"), per_class: int = 5, rgb: bool = False) -> dict[Path, np.ndarray]:
    written = {}
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = _grey(40 * c + i)
            if rgb:
                array = np.stack([array, 255 - array, array // 2], axis=-1)
            path = root / cls / f"img{i}.png"
            Image.fromarray(array).save(path)
            written[path] = array
    return written


def _all(ds) -> tuple[torch.Tensor, list[int]]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), list(ys)


# ------------------------------------------------------------------------------ images


def test_image_folder_values_labels_and_split(tmp_path):
    written = make_images(tmp_path, per_class=10)
    splits = load_splits("image-folder", data_dir=tmp_path, normalize="none", val_fraction=0.2, seed=0)
    info = splits.info
    assert info.class_names == ("cat", "dog") and info.sample_shape == (1, 6, 8) and info.spatial_dims == 2
    assert len(splits.train) == 16 and len(splits.val) == 4
    assert sorted(_all(splits.val)[1]) == [0, 0, 1, 1]  # stratified: 20% of each class
    # every sample is one of the written images, with its class's label, scaled to [0, 1]
    expected = {(cls, arr.tobytes()) for path, arr in written.items() for cls in [path.parent.name]}
    seen = set()
    for ds in (splits.train, splits.val):
        for x, y in (ds[i] for i in range(len(ds))):
            assert x.dtype == torch.float32 and x.shape == (1, 6, 8)
            pixels = np.round(x[0].numpy() * 255).astype(np.uint8)
            seen.add((info.class_names[y], pixels.tobytes()))
    assert seen == expected


def test_image_folder_split_is_seeded(tmp_path):
    make_images(tmp_path, per_class=10)

    def val_set(seed):
        splits = load_splits("image-folder", data_dir=tmp_path, seed=seed, normalize="none")
        return {_all(splits.val)[0][i].numpy().tobytes() for i in range(len(splits.val))}

    assert val_set(0) == val_set(0)
    assert any(val_set(0) != val_set(s) for s in (1, 2, 3))


def test_image_folder_rgb_and_dataset_normalisation(tmp_path):
    make_images(tmp_path, rgb=True)
    splits = load_splits("image-folder", data_dir=tmp_path)
    assert splits.info.in_channels == 3
    x, _ = _all(splits.train)
    per_channel = x.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)


def test_image_folder_mixed_modes_become_rgb_and_grey_can_be_forced(tmp_path):
    make_images(tmp_path)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "dog" / "colour.png")
    assert load_splits("image-folder", data_dir=tmp_path).info.in_channels == 3
    assert load_splits("image-folder", data_dir=tmp_path, channels=1).info.in_channels == 1


def test_image_folder_sizes_must_match_unless_resized(tmp_path):
    make_images(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "cat" / "big.jpg")
    with pytest.raises(ExciteError, match=r"different shapes.*size=HxW"):
        load_splits("image-folder", data_dir=tmp_path)
    splits = load_splits("image-folder", data_dir=tmp_path, size=(12, 16))
    assert splits.info.sample_shape == (1, 12, 16)
    assert splits.train[0][0].shape == (1, 12, 16)


def test_image_folder_own_split(tmp_path):
    make_images(tmp_path / "train", per_class=4)
    make_images(tmp_path / "val", per_class=2)
    splits = load_splits("image-folder", data_dir=tmp_path, val_fraction=0.5)
    assert len(splits.train) == 8 and len(splits.val) == 4


@pytest.mark.parametrize("cache", [True, False])
def test_corrupt_file_is_skipped_with_path_and_count(tmp_path, cache):
    make_images(tmp_path)
    bad = tmp_path / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits("image-folder", data_dir=tmp_path, cache=cache)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any(str(bad) in m for m in messages)
    assert any("skipped 1 unreadable file(s) out of 11" in m for m in messages)
    assert len(splits.train) + len(splits.val) == 10
    _all(splits.train)  # every kept sample still decodes


def test_strict_stops_at_corrupt_file(tmp_path):
    make_images(tmp_path)
    bad = tmp_path / "cat" / "broken.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(ExciteError, match=str(bad).replace("\\", "\\\\")):
        load_splits("image-folder", data_dir=tmp_path, strict=True)


def test_layout_errors(tmp_path):
    with pytest.raises(ExciteError, match="needs a data folder"):
        load_splits("image-folder")
    with pytest.raises(ExciteError, match="does not exist"):
        load_splits("image-folder", data_dir=tmp_path / "missing")
    with pytest.raises(ExciteError, match="no class subfolders"):
        load_splits("image-folder", data_dir=tmp_path)
    make_images(tmp_path, classes=("only",))
    with pytest.raises(ExciteError, match="single class folder"):
        load_splits("image-folder", data_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExciteError, match=r"class folder .*empty holds no"):
        load_splits("image-folder", data_dir=tmp_path)


def test_class_with_only_unreadable_files_is_an_error(tmp_path):
    make_images(tmp_path)
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "x.png").write_bytes(b"nope")
    with pytest.warns(DataWarning), pytest.raises(ExciteError, match=r"no readable training samples.*bird"):
        load_splits("image-folder", data_dir=tmp_path)


# ------------------------------------------------------------------------------ videos


def _write_video(path: Path, values: list[int], h: int = 8, w: int = 12) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)  # lossless, so values survive exactly
        stream.width, stream.height, stream.pix_fmt = w, h, "gray"
        for v in values:
            frame = av.VideoFrame.from_ndarray(np.full((h, w), v, np.uint8), format="gray")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _frame_means(x: torch.Tensor) -> list[int]:
    return [round(v) for v in (x[0].mean(dim=(1, 2)) * 255).tolist()]


@pytest.mark.parametrize("sampling, expected", [("uniform", [0, 3, 6, 9]), ("start", [0, 1, 2, 3])])
def test_video_files_frame_sampling(tmp_path, sampling, expected):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for k in range(2):
            _write_video(tmp_path / cls / f"v{k}.avi", [20 * i for i in range(10)])
    splits = load_splits(
        "video-folder", data_dir=tmp_path, frames=4, size=(8, 12), channels=1, sampling=sampling,
        normalize="none", val_fraction=0.5,
    )
    assert splits.info.sample_shape == (1, 4, 8, 12) and splits.info.spatial_dims == 3
    x, _ = splits.train[0]
    assert _frame_means(x) == [20 * i for i in expected]


def test_video_rgb_resize_and_short_video_repeats_frames(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        _write_video(tmp_path / cls / "short.avi", [0, 100, 200])
        _write_video(tmp_path / cls / "long.avi", list(range(0, 200, 10)))
    splits = load_splits("video-folder", data_dir=tmp_path, frames=5, size=(4, 6), normalize="none", val_fraction=0.5)
    assert splits.info.sample_shape == (3, 5, 4, 6)
    clips = _all(splits.train)[0].tolist() + _all(splits.val)[0].tolist()
    means = sorted(_frame_means(torch.tensor(c)) for c in clips)
    # 3 frames -> indices round(linspace(0, 2, 5)) = round(0, .5, 1, 1.5, 2) = 0, 0, 1, 2, 2 (half to even)
    # 20 frames -> round(linspace(0, 19, 5)) = round(0, 4.75, 9.5, 14.25, 19) = 0, 5, 10, 14, 19
    assert means == [[0, 0, 100, 200, 200]] * 2 + [[0, 50, 100, 140, 190]] * 2


def test_frame_folders_and_corrupt_video(tmp_path):
    for cls in ("a", "b"):
        for k in range(2):
            clip = tmp_path / cls / f"clip{k}"
            clip.mkdir(parents=True)
            for i in range(1, 12):  # natural order: frame_2 comes before frame_10
                Image.fromarray(np.full((6, 6), 10 * i, np.uint8)).save(clip / f"frame_{i}.png")
    (tmp_path / "b" / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits(
            "video-folder", data_dir=tmp_path, frames=3, size=6, channels=1, sampling="start",
            normalize="none", val_fraction=0.5,
        )
    assert any("bad.mp4" in str(w.message) and w.category is DataWarning for w in caught)
    assert len(splits.train) + len(splits.val) == 4
    assert _frame_means(splits.train[0][0]) == [10, 20, 30]


# ----------------------------------------------------------------------------- volumes


def make_volumes(root: Path, fmt: str, per_class: int = 3, shape=(4, 5, 6)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    written = {}
    for cls in ("x", "y"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.standard_normal(shape).astype(np.float32)
            if fmt == "npy":
                np.save(root / cls / f"v{i}.npy", array)
            elif fmt == "npz":
                np.savez(root / cls / f"v{i}.npz", image=array)
            else:
                nib = pytest.importorskip("nibabel")
                nib.Nifti1Image(array, np.eye(4)).to_filename(str(root / cls / f"v{i}.{fmt}"))
            written[f"{cls}/{i}"] = array
    return written


@pytest.mark.parametrize("fmt", ["npy", "npz", "nii", "nii.gz"])
def test_volume_folder_reads_every_format(tmp_path, fmt):
    written = make_volumes(tmp_path, fmt)
    splits = load_splits("volume-folder", data_dir=tmp_path, normalize="none", val_fraction=0.34)
    assert splits.info.sample_shape == (1, 4, 5, 6) and splits.info.spatial_dims == 3
    got = {x.numpy().tobytes() for x in _all(splits.train)[0]} | {x.numpy().tobytes() for x in _all(splits.val)[0]}
    assert got == {a[None].tobytes() for a in written.values()}


def test_volume_channels_and_resize(tmp_path):
    for cls in ("x", "y"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            np.save(tmp_path / cls / f"v{i}.npy", np.ones((2, 4, 4, 4), np.float32) * (i + 1))
    splits = load_splits("volume-folder", data_dir=tmp_path, size=8, normalize="none", val_fraction=0.5)
    assert splits.info.sample_shape == (2, 8, 8, 8)
    x, _ = splits.train[0]
    assert torch.allclose(x, torch.full_like(x, x[0, 0, 0, 0].item()))  # constant stays constant
    x.zero_()  # writing into a sample leaves the cached copy alone
    assert splits.train[0][0].abs().sum() > 0
    # NIfTI keeps channels last: (X, Y, Z, C) -> (C, X, Y, Z)
    nib = pytest.importorskip("nibabel")
    for cls in ("x", "y"):
        nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)).to_filename(str(tmp_path / cls / "n.nii.gz"))
    assert load_splits("volume-folder", data_dir=tmp_path, size=8).info.sample_shape == (2, 8, 8, 8)


def test_volume_sample_normalisation(tmp_path):
    make_volumes(tmp_path, "npy")
    splits = load_splits("volume-folder", data_dir=tmp_path, normalize="sample", val_fraction=0.34)
    x, _ = splits.train[0]
    assert abs(x.mean().item()) < 1e-5 and x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_volume_bad_files(tmp_path):
    make_volumes(tmp_path, "npz")
    np.savez(tmp_path / "x" / "two.npz", a=np.zeros((4, 5, 6)), b=np.zeros((4, 5, 6)))
    np.save(tmp_path / "y" / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y" / "flat.npy", np.zeros((4, 5)))
    (tmp_path / "y" / "junk.nii.gz").write_bytes(b"junk")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_splits("volume-folder", data_dir=tmp_path, val_fraction=0.34)
    messages = "\n".join(str(w.message) for w in caught)
    for name in ("two.npz", "objects.npy", "flat.npy", "junk.nii.gz"):
        assert name in messages
    assert "skipped 4 unreadable file(s) out of 10" in messages
    assert len(splits.train) + len(splits.val) == 6
    # key= picks an array in every .npz: only two.npz has 'a', so class y keeps nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExciteError, match=r"no readable training samples in class folder\(s\) \['y'\]"):
            load_splits("volume-folder", data_dir=tmp_path, key="a", val_fraction=0.34)


def test_missing_reader_is_an_install_hint_not_a_skipped_file(tmp_path, monkeypatch):
    import sys

    from excite.errors import MissingDependencyError

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "clip.mp4").write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'excite\[data\]'"):
        load_splits("video-folder", data_dir=tmp_path)
