"""IDX reader and the fashion-mnist dataset, on small IDX files the tests write."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from excite.data import fashion_mnist, load_splits, read_idx
from excite.errors import ExciteError


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08, *, gz: bool = False) -> Path:
    """IDX writer written from the format description: 0, 0, type, ndim, big-endian dims, data."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    payload = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += np.ascontiguousarray(array, dtype=big_endian).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "type_code, dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)]
)
def test_read_idx_round_trip(tmp_path, gz, type_code, dtype):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", array, type_code, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_header_bytes_by_hand(tmp_path):
    # 2 labels (7, 9): magic 0x00000801, one dim = 2
    (tmp_path / "l").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x09")
    np.testing.assert_array_equal(read_idx(tmp_path / "l"), [7, 9])


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x12\x34\x08\x01\x00\x00\x00\x01\x05", "bad magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad magic number"),  # unknown type code
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "file has 9 bytes"),  # 3 labels declared, 1 given
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "file has 10 bytes"),  # trailing byte
        (b"\x00\x00", "only 2 bytes"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, content, match):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(ExciteError, match=match):
        read_idx(tmp_path / "bad")


def _gzip_variants() -> dict[str, bytes]:
    """A valid .gz of a 2-label IDX file, and broken copies built from RFC 1951/1952."""
    good = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x09")
    crc = good[-8:-4]
    return {
        "not gzip": b"not gzip at all",
        # first deflate byte 0b111: BFINAL=1, BTYPE=11 (reserved): zlib "invalid block type"
        "reserved block type": good[:10] + b"\x07" + good[11:],
        "CRC32 flipped": good[:-8] + bytes([crc[0] ^ 0x01]) + crc[1:] + good[-4:],
        "truncated": good[: len(good) // 2],
    }


@pytest.mark.parametrize("variant", list(_gzip_variants()))
def test_read_idx_corrupt_gzip_names_the_file(tmp_path, variant):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(_gzip_variants()[variant])
    with pytest.raises(ExciteError, match="cannot read IDX file") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bit_flipped_gz_is_one_line_cli_error(tmp_path, capsys):
    from excite.cli import main

    _fake_fashion(tmp_path, n_train=10, n_test=10)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    assert (raw[10] >> 1) & 0b11 != 0b11
    raw[10] |= 0b110  # flip the first block's BTYPE bits to 11, reserved in RFC 1951
    bad.write_bytes(bytes(raw))
    code = main(["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path), "--out",
                 str(tmp_path / "runs"), "--model", "tiny_resnet", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("excite train: error: cannot read IDX file") and str(bad) in err


def _fake_fashion(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(folder / stem, array, gz=gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    arrays = _fake_fashion(tmp_path, gz=gz)
    splits = load_splits("fashion-mnist", data_dir=tmp_path, normalize=False)
    info = splits.info
    assert (info.num_classes, info.in_channels, info.spatial_dims, info.sample_shape) == (10, 1, 2, (1, 28, 28))
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    assert len(splits.train) == 40 and len(splits.val) == 20  # the test split is the val split
    x, y = splits.val[7]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert y == int(arrays["t10k-labels-idx1-ubyte"][7])
    np.testing.assert_allclose(x[0].numpy(), arrays["t10k-images-idx3-ubyte"][7] / 255.0, atol=1e-6)
    # picklable (DataLoader workers started with spawn/forkserver)
    assert torch.equal(pickle.loads(pickle.dumps(splits.val))[7][0], x)


def test_fashion_mnist_normalisation_uses_training_mean_and_std(tmp_path):
    arrays = _fake_fashion(tmp_path / "fashion-mnist")  # the subfolder of data_dir is searched too
    splits = load_splits("fashion-mnist", data_dir=tmp_path)
    train = arrays["train-images-idx3-ubyte"] / 255.0
    mean, std = train.mean(), train.std()
    x, _ = splits.train[3]
    np.testing.assert_allclose(x[0].numpy(), (train[3] - mean) / std, atol=1e-5)
    whole = torch.stack([splits.train[i][0] for i in range(len(splits.train))])
    assert abs(whole.mean().item()) < 1e-5 and whole.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_fashion_mnist_subsets_are_seeded_and_balanced(tmp_path):
    _fake_fashion(tmp_path)
    a = load_splits("fashion-mnist", data_dir=tmp_path, train_size=20, val_size=10, seed=0)
    b = load_splits("fashion-mnist", data_dir=tmp_path, train_size=20, val_size=10, seed=0)
    c = load_splits("fashion-mnist", data_dir=tmp_path, train_size=20, val_size=10, seed=1)
    assert len(a.train) == 20 and len(a.val) == 10
    labels = [a.train[i][1] for i in range(20)]
    assert np.bincount(labels, minlength=10).tolist() == [2] * 10
    same = all(torch.equal(a.train[i][0], b.train[i][0]) for i in range(20))
    differ = any(not torch.equal(a.train[i][0], c.train[i][0]) for i in range(20))
    assert same and differ


def test_fashion_mnist_missing_files_names_the_places_searched(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ExciteError) as info:
        load_splits("fashion-mnist", data_dir=None)
    message = str(info.value)
    for place in (tmp_path / "system", tmp_path / "xdg" / "excite" / "fashion-mnist"):
        assert str(place) in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_without_data_dir_uses_the_system_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    _fake_fashion(tmp_path / "system", n_train=30, n_test=10)
    splits = load_splits("fashion-mnist", data_dir=None)
    assert len(splits.train) == 30 and len(splits.val) == 10


@pytest.mark.parametrize("layout", ["empty", "missing", "three of four", "not a folder"])
def test_explicit_data_dir_never_falls_back_to_another_copy(tmp_path, monkeypatch, layout):
    """A wrong --data-dir is an error naming it and the files it lacks, even where a
    system (or per-user) copy exists."""
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _fake_fashion(tmp_path / "system", n_train=10, n_test=10)
    _fake_fashion(tmp_path / "xdg" / "excite" / "fashion-mnist", n_train=10, n_test=10)
    given = tmp_path / "given"
    if layout == "empty":
        given.mkdir()
    elif layout == "three of four":
        _fake_fashion(given, n_train=10, n_test=10)
        (given / "t10k-labels-idx1-ubyte.gz").unlink()
    elif layout == "not a folder":
        given.write_text("a file")
    with pytest.raises(ExciteError) as info:
        load_splits("fashion-mnist", data_dir=given)
    message = str(info.value)
    assert str(given) in message and "\n" not in message
    assert str(tmp_path / "system") not in message
    if layout == "three of four":
        assert "has no t10k-labels-idx1-ubyte[.gz]" in message
        assert "train-images-idx3-ubyte[.gz], train-labels" in message  # what it needs, in all
    elif layout == "empty":
        assert "has no train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], " in message
    else:
        assert ("does not exist" if layout == "missing" else "is not a folder") in message


def test_wrong_data_dir_is_a_one_line_cli_error(tmp_path, capsys, monkeypatch):
    from excite.cli import main

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    _fake_fashion(tmp_path / "system", n_train=10, n_test=10)
    (tmp_path / "mine").mkdir()
    code = main(["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "mine"), "--out",
                 str(tmp_path / "runs"), "--model", "tiny_resnet", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"--data-dir) {tmp_path / 'mine'} lacks the IDX files" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("option", "size", "split"), [("train_size", 41, 40), ("val_size", 21, 20)])
def test_subset_larger_than_the_split_is_an_error(tmp_path, option, size, split):
    _fake_fashion(tmp_path)  # 40 training and 20 test images
    with pytest.raises(ValueError, match=rf"{option}={size} is more than the {split} images"):
        load_splits("fashion-mnist", data_dir=tmp_path, **{option: size})
    whole = load_splits("fashion-mnist", data_dir=tmp_path, **{option: split})  # all of it is fine
    assert len(whole.train if option == "train_size" else whole.val) == split


def test_fashion_mnist_rejects_wrong_image_size(tmp_path):
    arrays = _fake_fashion(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", arrays["train-images-idx3-ubyte"][:, :27, :27], gz=True)
    with pytest.raises(ExciteError, match=r"\(N, 28, 28\)"):
        load_splits("fashion-mnist", data_dir=tmp_path)


@pytest.mark.skipif(not fashion_mnist.SYSTEM_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_files():
    splits = load_splits("fashion-mnist", data_dir=None)
    assert len(splits.train) == 60000 and len(splits.val) == 10000  # published sizes
    labels = np.asarray(splits.val.labels)
    assert np.bincount(labels).tolist() == [1000] * 10  # the test set is balanced
    x, _ = splits.train[0]
    assert x.shape == (1, 28, 28)
