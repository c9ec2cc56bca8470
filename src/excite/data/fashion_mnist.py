"""Fashion-MNIST from the standard IDX files, and a reader for the IDX format.

IDX (LeCun et al., "The MNIST database"): a big-endian header ``0x00 0x00 TYPE NDIM``,
then ``NDIM`` unsigned 32-bit dimension sizes, then the data in C order. ``TYPE`` is
0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32 or 0x0E float64.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, arXiv:1708.07747): 60,000 training and
10,000 test images of 28 x 28 grey pixels in 10 classes. The test set is used as the
validation split.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from excite.data._common import StoredDataset, stratified_subset
from excite.data.options import Bool, Int, Option, Optional
from excite.data.registry import DatasetInfo, DatasetSpec, DataSplits, register_dataset
from excite.errors import ExciteError

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw, or gzip-compressed when the name ends in ``.gz``).

    Args:
        path: the file.

    Returns:
        An array with the file's dimensions, in native byte order.

    Raises:
        ExciteError: the file cannot be read (e.g. a corrupt or truncated ``.gz``), is not
            IDX (bad magic number, unknown type code), or its size does not match its
            header (truncated or trailing bytes); the message names the file.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip: bad header/CRC, truncated, bad deflate data
        raise ExciteError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4:
        raise ExciteError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_TYPES:
        raise ExciteError(
            f"{path} is not an IDX file: bad magic number 0x{raw[:4].hex()} "
            f"(expected 0x0000TTNN with type TT in {{{', '.join(f'{t:02x}' for t in _IDX_TYPES)}}})"
        )
    if ndim == 0:
        raise ExciteError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ExciteError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ExciteError(
            f"{path}: IDX header says dims {dims} of {dtype.name} ({expected} bytes in all) "
            f"but the file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def user_data_dir() -> Path:
    """The per-user folder: ``$XDG_CACHE_HOME/excite/fashion-mnist`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "excite" / "fashion-mnist"


def search_dirs(data_dir: Path | None) -> list[Path]:
    """Folders searched, in order: ``data_dir`` and its ``fashion-mnist`` subfolder when
    it is given (nothing else: an explicit folder never falls back to another copy);
    otherwise :data:`SYSTEM_DIR`, then :func:`user_data_dir`."""
    if data_dir is not None:
        return [data_dir, data_dir / "fashion-mnist"]
    return [SYSTEM_DIR, user_data_dir()]


def _files_in(folder: Path) -> dict[str, Path]:
    """The IDX files (raw or ``.gz``) ``folder`` holds, by :data:`FILES` key."""
    found: dict[str, Path] = {}
    for key, stem in FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def find_files(data_dir: Path | None) -> dict[str, Path]:
    """The four IDX files from the first folder of :func:`search_dirs` that holds all
    of them. Each file may be raw or ``.gz``.

    Raises:
        ExciteError: no folder holds all four. With ``data_dir`` the message names it
            and the files it lacks; without, every folder searched and how to get the
            files.
    """
    folders = search_dirs(data_dir)
    found = [_files_in(folder) for folder in folders]
    for files in found:
        if len(files) == len(FILES):
            return files
    names = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
    if data_dir is not None:
        if not data_dir.is_dir():
            problem = "does not exist" if not data_dir.exists() else "is not a folder"
            raise ExciteError(f"fashion-mnist: data_dir (--data-dir) {data_dir} {problem}; it must hold {names}")
        best = max(range(len(folders)), key=lambda i: len(found[i]))
        missing = ", ".join(f"{FILES[key]}[.gz]" for key in FILES if key not in found[best])
        raise ExciteError(
            f"fashion-mnist: data_dir (--data-dir) {data_dir} lacks the IDX files: {folders[best]} has no "
            f"{missing} (needs all of {names}, in {data_dir} or {data_dir / 'fashion-mnist'}); "
            "leave out --data-dir to use the system or per-user copy"
        )
    raise ExciteError(
        f"fashion-mnist: files not found (need {names}); looked in: {'; '.join(map(str, folders))}. "
        "Get them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download "
        "them from https://github.com/zalandoresearch/fashion-mnist into one of those folders "
        "(or pass --data-dir)"
    )


def _load_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ExciteError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ExciteError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ExciteError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ExciteError(f"{labels_path}: label {int(labels.max())} out of range 0..{len(CLASS_NAMES) - 1}")
    return images, labels


@dataclass(frozen=True)
class _Standardize:
    """uint8 (28, 28) image → float32 (1, 28, 28): ``pixel * scale - shift``; picklable."""

    scale: float
    shift: float

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(torch.float32) * self.scale - self.shift).unsqueeze(0)


def build_fashion_mnist(
    *,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    train_size: int | None,
    val_size: int | None,
    normalize: bool,
) -> DataSplits:
    """Build fashion-mnist (see the module docstring and docs/data.md)."""
    del val_fraction, strict  # the dataset has its own test split; files are all-or-nothing
    files = find_files(data_dir)
    train_images, train_labels = _load_pair(files["train_images"], files["train_labels"])
    val_images, val_labels = _load_pair(files["val_images"], files["val_labels"])
    if normalize:  # mean/std of all training pixels in [0, 1], from their histogram
        counts = np.bincount(train_images.ravel(), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64) / 255.0
        mean = float((counts * values).sum() / counts.sum())
        std = float(np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())) or 1.0
    else:
        mean, std = 0.0, 1.0
    convert = _Standardize(scale=1.0 / (255.0 * std), shift=mean / std)

    def split(images: np.ndarray, labels: np.ndarray, size: int | None, stream: int) -> StoredDataset:
        if size is not None and size > len(labels):
            option, part = ("train_size", "training") if stream == 0 else ("val_size", "test")
            raise ValueError(
                f"fashion-mnist: {option}={size} is more than the {len(labels)} images of the {part} "
                f"split; give at most {len(labels)} (or leave {option} out to use them all)"
            )
        index = range(len(labels)) if size is None else stratified_subset(labels, size, seed, stream)
        index = np.asarray(list(index), dtype=np.int64)
        items = torch.from_numpy(images[index])
        return StoredDataset(items, labels[index].tolist(), convert)

    info = DatasetInfo(
        name="fashion-mnist",
        num_classes=len(CLASS_NAMES),
        in_channels=1,
        spatial_dims=2,
        sample_shape=(1, 28, 28),
        class_names=CLASS_NAMES,
        description=FASHION_MNIST.description,
    )
    return DataSplits(
        train=split(train_images, train_labels, train_size, 0),
        val=split(val_images, val_labels, val_size, 1),
        info=info,
    )


FASHION_MNIST = register_dataset(
    DatasetSpec(
        name="fashion-mnist",
        build=build_fashion_mnist,
        options={
            "train_size": Option(
                None, Optional(Int(1)), "use a seeded, class-balanced subset of this many training images (at most all 60,000)"
            ),
            "val_size": Option(
                None, Optional(Int(1)), "use a seeded, class-balanced subset of this many test images (at most all 10,000)"
            ),
            "normalize": Option(
                True, Bool(), "standardise pixels with the training set's mean and std (else scale to [0, 1])"
            ),
        },
        description="Zalando's Fashion-MNIST (IDX files): 60k train / 10k test grey 28x28 images "
        "(the test split is the validation set)",
        kind="image",
        shape="1x28x28",
        classes="10 (clothing types)",
    )
)
