"""Users' own data: one subfolder per class, holding images, videos or volumes.

```
DATA_DIR/                     DATA_DIR/                  (own split: used as is)
  cat/ a.png b.jpg ...          train/ cat/ ... dog/ ...
  dog/ c.png ...                val/   cat/ ... dog/ ...   (or test/)
```

Class names are the subfolder names, sorted; labels follow that order. Without an own
split the samples are split per class with a seeded permutation (``val_fraction``).

Every file is decoded once when the dataset is built: a file that cannot be read is
reported with its path and skipped (a count follows at the end), or stops the build
with ``strict=True``. A class folder with no usable file, or fewer than two classes,
is an error. Decoded samples stay in memory (``cache=True``, stored as uint8 for
images and videos) or are decoded again on each access (``cache=False``).

Readers: Pillow for images, PyAV for video files, NumPy for ``.npy``/``.npz`` and
nibabel for NIfTI; all are optional (``pip install 'excite[data]'``). Arrays are never
unpickled (``allow_pickle=False``).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from excite.data._common import SkipLog, StoredDataset, stratified_split
from excite.data.options import Bool, Choice, Int, Option, Optional, Size, Text
from excite.data.registry import DatasetInfo, DatasetSpec, DataSplits, register_dataset
from excite.errors import ExciteError, MissingDependencyError, require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv")
VOLUME_SUFFIXES = (".npy", ".npz", ".nii", ".nii.gz")

_OWN_SPLITS = (("train", "val"), ("train", "test"))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts frame_2 before frame_10."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name.lower())]


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=_natural_key)


@dataclass
class _Entry:
    path: Path
    label: int
    split: str  # "train", "val" or "" (to be split)


def _scan(
    dataset: str, data_dir: Path | None, accept: Callable[[Path], bool], what: str
) -> tuple[list[str], list[_Entry]]:
    """Class names and candidate entries below ``data_dir`` (own split or not)."""
    if data_dir is None:
        raise ExciteError(f"{dataset} needs a data folder (--data-dir / data_dir=) with one subfolder per class")
    if not data_dir.is_dir():
        raise ExciteError(f"{dataset}: data folder {data_dir} does not exist or is not a folder")
    names = {p.name for p in data_dir.iterdir() if p.is_dir()}
    roots: list[tuple[Path, str]] = [(data_dir, "")]
    for train, val in _OWN_SPLITS:
        if train in names and val in names:
            roots = [(data_dir / train, "train"), (data_dir / val, "val")]
            break
    class_names = sorted(p.name for p in roots[0][0].iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise ExciteError(f"{dataset}: {roots[0][0]} has no class subfolders (expected one folder per class)")
    if len(class_names) < 2:
        raise ExciteError(
            f"{dataset}: {roots[0][0]} has a single class folder ({class_names[0]!r}); classification needs at least 2"
        )
    entries: list[_Entry] = []
    for root, split in roots:
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        extra = sorted(set(found) - set(class_names))
        if extra:
            raise ExciteError(f"{dataset}: {root} has class folders {extra} that {roots[0][0]} lacks")
        for label, cls in enumerate(class_names):
            folder = root / cls
            if not folder.is_dir():
                if split == "val":
                    continue  # a class may be absent from an own validation split
                raise ExciteError(f"{dataset}: class folder {folder} is missing")
            items = [p for p in _visible(folder) if accept(p)]
            if not items:
                raise ExciteError(f"{dataset}: class folder {folder} holds no {what}")
            entries += [_Entry(p, label, split) for p in items]
    return class_names, entries


def _progress(items: list[_Entry], desc: str) -> Any:
    """``items`` wrapped in a tqdm bar when there are many, tqdm is installed and stderr is
    a terminal; else ``items`` unchanged."""
    if len(items) < 500 or not sys.stderr.isatty() or importlib.util.find_spec("tqdm") is None:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False)


def _stats(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel sum, sum of squares and count of a (C, ...) sample on the model scale."""
    x = array.reshape(array.shape[0], -1).astype(np.float64)
    if array.dtype == np.uint8:
        x /= 255.0
    return x.sum(1), (x * x).sum(1), x.shape[1]


@dataclass(frozen=True, eq=False)
class _ToTensor:
    """Stored array → float32 tensor (always a new one), scaled and normalised."""

    normalize: str
    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(array))
        # always a new tensor: callers may write into it without touching the cache
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
        if self.normalize == "dataset":
            x = (x - self.mean) / self.std
        elif self.normalize == "sample":
            axes = tuple(range(1, x.ndim))
            mu = x.mean(dim=axes, keepdim=True)
            sd = x.std(dim=axes, keepdim=True, unbiased=False)
            x = (x - mu) / torch.where(sd > 0, sd, torch.ones_like(sd))
        return x


@dataclass(frozen=True, eq=False)
class _Cached:
    """Sample ``index`` from the arrays decoded during the scan."""

    arrays: list[np.ndarray]
    to_tensor: _ToTensor

    def __call__(self, index: int) -> torch.Tensor:
        return self.to_tensor(self.arrays[index])


@dataclass(frozen=True, eq=False)
class _Reload:
    """Sample ``index`` decoded again from its file (``cache=False``)."""

    dataset: str
    paths: list[Path]
    decode: Callable[[Path], np.ndarray]
    sample_shape: tuple[int, ...]
    to_tensor: _ToTensor

    def __call__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            array = self.decode(path)
        except Exception as exc:  # noqa: BLE001
            raise ExciteError(f"{self.dataset}: cannot read {path} any more: {exc}") from exc
        if tuple(array.shape) != self.sample_shape:
            raise ExciteError(f"{self.dataset}: {path} changed shape to {array.shape} since the scan")
        return self.to_tensor(array)


def _build(
    *,
    dataset: str,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    accept: Callable[[Path], bool],
    what: str,
    decode: Callable[[Path], np.ndarray],
    spatial_dims: int,
    normalize: str,
    cache: bool,
    description: str,
    size_hint: str,
) -> DataSplits:
    """Scan, decode every entry once (skip or stop on errors), split, wrap."""
    class_names, entries = _scan(dataset, data_dir, accept, what)
    log = SkipLog(dataset, strict=strict)
    kept: list[_Entry] = []
    arrays: list[np.ndarray] = []
    stats: list[tuple[np.ndarray, np.ndarray, int]] = []
    shapes: dict[tuple[int, ...], Path] = {}
    for entry in _progress(entries, f"{dataset}: reading {data_dir}"):
        log.seen += 1
        try:
            array = decode(entry.path)
        except MissingDependencyError:  # a missing extra is not a bad file
            raise
        except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
            log.skip(entry.path, f"{type(exc).__name__}: {exc}")
            continue
        if array.ndim != spatial_dims + 1:
            log.skip(entry.path, f"decoded to shape {array.shape}, expected (C, {spatial_dims} spatial dims)")
            continue
        shapes.setdefault(tuple(array.shape), entry.path)
        kept.append(entry)
        stats.append(_stats(array))
        if cache:
            arrays.append(array)
    log.finish()
    if len(shapes) > 1:
        examples = "; ".join(f"{path} is {'x'.join(map(str, shape))}" for shape, path in list(shapes.items())[:3])
        raise ExciteError(
            f"{dataset}: samples have different shapes ({examples}); pass the option {size_hint} to resize them all"
        )
    counts = np.bincount([e.label for e in kept if e.split != "val"], minlength=len(class_names))
    empty = [class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise ExciteError(f"{dataset}: no readable training samples in class folder(s) {empty}")
    if not kept:  # pragma: no cover - caught by the checks above
        raise ExciteError(f"{dataset}: no readable samples in {data_dir}")

    labels = [e.label for e in kept]
    if kept[0].split:  # own split
        train_idx = [i for i, e in enumerate(kept) if e.split == "train"]
        val_idx = [i for i, e in enumerate(kept) if e.split == "val"]
        if not val_idx:
            raise ExciteError(f"{dataset}: the validation folder under {data_dir} holds no readable samples")
    else:
        train_idx, val_idx = stratified_split(labels, val_fraction, seed)

    sample_shape = next(iter(shapes))
    channels = sample_shape[0]
    mean_t = std_t = None
    if normalize == "dataset":
        total = sum(stats[i][0] for i in train_idx)
        total_sq = sum(stats[i][1] for i in train_idx)
        n = sum(stats[i][2] for i in train_idx)
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
        std[std == 0] = 1.0
        view = (channels,) + (1,) * spatial_dims
        mean_t = torch.tensor(mean, dtype=torch.float32).view(view)
        std_t = torch.tensor(std, dtype=torch.float32).view(view)
    to_tensor = _ToTensor(normalize, mean_t, std_t)
    if cache:
        convert: Callable[[int], torch.Tensor] = _Cached(arrays, to_tensor)
    else:
        convert = _Reload(dataset, [e.path for e in kept], decode, sample_shape, to_tensor)

    def subset(indices: Sequence[int]) -> StoredDataset:
        return StoredDataset(list(indices), [labels[i] for i in indices], convert)

    info = DatasetInfo(
        name=dataset,
        num_classes=len(class_names),
        in_channels=channels,
        spatial_dims=spatial_dims,
        sample_shape=sample_shape,
        class_names=tuple(class_names),
        description=description,
    )
    return DataSplits(train=subset(train_idx), val=subset(val_idx), info=info)


_NORMALIZE = Option(
    "dataset",
    Choice(["dataset", "sample", "none"]),
    "dataset: per-channel mean/std of the training samples; sample: each sample standardised "
    "on its own; none: raw values (images and videos scaled to [0, 1])",
)
_CACHE = Option(True, Bool(), "keep decoded samples in memory (else decode again on every access)")


# ------------------------------------------------------------------------------ images


def _pil_mode(channels: int | None) -> str | None:
    return None if channels is None else {1: "L", 3: "RGB"}[channels]


def _image_to_array(image: Any, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """A PIL image as a uint8 (C, H, W) array in ``mode`` ("L" or "RGB"), resized to (H, W)."""
    pil = require("PIL.Image", extra="data", purpose="reading images")
    if image.mode != mode:
        image = image.convert(mode)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), pil.Resampling.BILINEAR)
    array = np.array(image, dtype=np.uint8)  # a writable copy
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _image_mode(path: Path, channels: int | None) -> str:
    if channels is not None:
        return _pil_mode(channels)  # type: ignore[return-value]
    pil = require("PIL.Image", extra="data", purpose="reading images")
    with pil.open(path) as image:
        return "L" if image.mode in _GREY_MODES else "RGB"


def _read_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    pil = require("PIL.Image", extra="data", purpose="reading images")
    with pil.open(path) as image:
        image.load()
        return _image_to_array(image, mode, size)


@dataclass(frozen=True)
class _ImageDecoder:
    mode: str
    size: tuple[int, int] | None

    def __call__(self, path: Path) -> np.ndarray:
        return _read_image(path, self.mode, self.size)


def build_image_folder(
    *,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    size: tuple[int, int] | None,
    channels: int | None,
    normalize: str,
    cache: bool,
) -> DataSplits:
    """Build image-folder (see the module docstring and docs/data.md)."""
    require("PIL.Image", extra="data", purpose="the image-folder dataset")
    if channels not in (None, 1, 3):
        raise ValueError(f"option 'channels' must be 1, 3 or none, got {channels}")
    if channels is None:  # auto: grey only if every readable image is grey
        _, entries = _scan("image-folder", data_dir, _is_image, "PNG/JPEG images")
        seen = set()
        for entry in entries:
            try:
                seen.add(_image_mode(entry.path, None))
            except Exception:  # noqa: BLE001 - reported by the decoding pass
                continue
        mode = "RGB" if "RGB" in seen else "L"
    else:
        mode = _pil_mode(channels)

    decode = _ImageDecoder(mode, size)  # type: ignore[arg-type]

    return _build(
        dataset="image-folder",
        data_dir=data_dir,
        val_fraction=val_fraction,
        seed=seed,
        strict=strict,
        accept=_is_image,
        what="PNG/JPEG images",
        decode=decode,
        spatial_dims=2,
        normalize=normalize,
        cache=cache,
        description=IMAGE_FOLDER.description,
        size_hint="size=HxW",
    )


def _is_image(path: Path) -> bool:
    return path.is_file() and _suffix(path) in IMAGE_SUFFIXES


IMAGE_FOLDER = register_dataset(
    DatasetSpec(
        name="image-folder",
        build=build_image_folder,
        options={
            "size": Option(None, Optional(Size(2)), "resize every image to H x W (none: all images must match)"),
            "channels": Option(
                None, Optional(Int(1, 3)), "1 (grey) or 3 (RGB); none: 1 if every image is grey, else 3"
            ),
            "normalize": _NORMALIZE,
            "cache": _CACHE,
        },
        description="your images: DATA_DIR/<class>/*.png|jpg (Pillow)",
        kind="image",
        shape="Cx(H)x(W) from files",
        classes="one per subfolder",
        needs_data_dir=True,
        extras=("pillow",),
    )
)

# ------------------------------------------------------------------------------ videos


def _pick_frames(n: int, frames: int, sampling: str) -> np.ndarray:
    """Indices of ``frames`` frames out of ``n``: evenly spread, or the first ones.

    Short videos repeat frames (uniform) or their last frame (start).
    """
    if n <= 0:
        raise ValueError("no frames decoded")
    if sampling == "uniform":
        return np.round(np.linspace(0, n - 1, frames)).astype(int)
    return np.minimum(np.arange(frames), n - 1)


def _read_video_file(path: Path, frames: int, size: tuple[int, int], channels: int, sampling: str) -> np.ndarray:
    av = require("av", extra="data", purpose="reading video files")
    fmt = "gray" if channels == 1 else "rgb24"
    decoded: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            decoded.append(frame.reformat(width=size[1], height=size[0], format=fmt).to_ndarray())
            if sampling == "start" and len(decoded) >= frames:
                break
    clip = np.stack([decoded[i] for i in _pick_frames(len(decoded), frames, sampling)])
    return clip[None] if clip.ndim == 3 else clip.transpose(3, 0, 1, 2)  # (C, T, H, W)


def _read_frame_folder(path: Path, frames: int, size: tuple[int, int], channels: int, sampling: str) -> np.ndarray:
    files = [p for p in _visible(path) if _is_image(p)]
    mode = _pil_mode(channels)
    picked = _pick_frames(len(files), frames, sampling)
    cache: dict[int, np.ndarray] = {}
    out = []
    for i in picked:
        if i not in cache:
            try:
                cache[i] = _read_image(files[i], mode, size)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"frame {files[i].name}: {exc}") from exc
        out.append(cache[i])
    return np.stack(out, axis=1)  # (C, T, H, W)


def _is_video(path: Path) -> bool:
    if path.is_dir():
        return any(_is_image(p) for p in path.iterdir())
    return path.is_file() and _suffix(path) in VIDEO_SUFFIXES


@dataclass(frozen=True)
class _VideoDecoder:
    frames: int
    size: tuple[int, int]
    channels: int
    sampling: str

    def __call__(self, path: Path) -> np.ndarray:
        if path.is_dir():
            require("PIL.Image", extra="data", purpose="reading frame folders")
            return _read_frame_folder(path, self.frames, self.size, self.channels, self.sampling)
        return _read_video_file(path, self.frames, self.size, self.channels, self.sampling)


def build_video_folder(
    *,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    frames: int,
    size: tuple[int, int],
    channels: int,
    sampling: str,
    normalize: str,
    cache: bool,
) -> DataSplits:
    """Build video-folder (see the module docstring and docs/data.md)."""
    if channels not in (1, 3):
        raise ValueError(f"option 'channels' must be 1 or 3, got {channels}")

    decode = _VideoDecoder(frames, size, channels, sampling)

    return _build(
        dataset="video-folder",
        data_dir=data_dir,
        val_fraction=val_fraction,
        seed=seed,
        strict=strict,
        accept=_is_video,
        what="video files or folders of frames",
        decode=decode,
        spatial_dims=3,
        normalize=normalize,
        cache=cache,
        description=VIDEO_FOLDER.description,
        size_hint="size=HxW",
    )


VIDEO_FOLDER = register_dataset(
    DatasetSpec(
        name="video-folder",
        build=build_video_folder,
        options={
            "frames": Option(16, Int(1), "clip length T: frames taken from each video"),
            "size": Option((64, 64), Size(2), "frame size H x W after resizing"),
            "channels": Option(3, Int(1, 3), "1 (grey) or 3 (RGB)"),
            "sampling": Option(
                "uniform",
                Choice(["uniform", "start"]),
                "uniform: T frames evenly spread over the video; start: the first T frames "
                "(short videos repeat frames)",
            ),
            "normalize": _NORMALIZE,
            "cache": _CACHE,
        },
        description="your videos: DATA_DIR/<class>/*.mp4|avi|... (PyAV) or <class>/<clip>/frame*.png",
        kind="video",
        shape="Cx16x64x64 (options)",
        classes="one per subfolder",
        needs_data_dir=True,
        extras=("av", "pillow"),
    )
)

# ----------------------------------------------------------------------------- volumes


def _read_volume(path: Path, key: str | None) -> np.ndarray:
    suffix = _suffix(path)
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        channels_last = False
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if key is not None:
                if key not in keys:
                    raise KeyError(f"no array {key!r} in the archive (it has {keys})")
                array = archive[key]
            elif len(keys) == 1:
                array = archive[keys[0]]
            else:
                raise ValueError(f"the archive holds {len(keys)} arrays {keys}; choose one with the option key=NAME")
        channels_last = False
    else:
        nib = require("nibabel", extra="data", purpose="reading NIfTI volumes")
        array = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
        channels_last = True
    if array.dtype.kind not in "biuf":
        raise ValueError(f"array of dtype {array.dtype} is not numeric")
    if array.ndim == 3:
        array = array[None]
    elif array.ndim == 4:
        if channels_last:
            array = np.moveaxis(array, -1, 0)
    else:
        raise ValueError(f"array of shape {array.shape}: expected 3 dims (D, H, W) or 4 with channels")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("array holds NaN or infinite values")
    return np.ascontiguousarray(array)


def _is_volume(path: Path) -> bool:
    return path.is_file() and _suffix(path) in VOLUME_SUFFIXES


@dataclass(frozen=True)
class _VolumeDecoder:
    key: str | None
    size: tuple[int, int, int] | None

    def __call__(self, path: Path) -> np.ndarray:
        array = _read_volume(path, self.key)
        if self.size is not None and tuple(array.shape[1:]) != self.size:
            resized = F.interpolate(
                torch.from_numpy(array)[None], size=self.size, mode="trilinear", align_corners=False
            )
            array = resized[0].numpy()
        return array


def build_volume_folder(
    *,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    size: tuple[int, int, int] | None,
    key: str | None,
    normalize: str,
    cache: bool,
) -> DataSplits:
    """Build volume-folder (see the module docstring and docs/data.md)."""

    decode = _VolumeDecoder(key, size)

    return _build(
        dataset="volume-folder",
        data_dir=data_dir,
        val_fraction=val_fraction,
        seed=seed,
        strict=strict,
        accept=_is_volume,
        what=".npy/.npz/.nii/.nii.gz volumes",
        decode=decode,
        spatial_dims=3,
        normalize=normalize,
        cache=cache,
        description=VOLUME_FOLDER.description,
        size_hint="size=DxHxW",
    )


VOLUME_FOLDER = register_dataset(
    DatasetSpec(
        name="volume-folder",
        build=build_volume_folder,
        options={
            "size": Option(
                None, Optional(Size(3)), "resize every volume to D x H x W (trilinear; none: all must match)"
            ),
            "key": Option(None, Optional(Text()), "array name inside .npz files (none: the only array)"),
            "normalize": _NORMALIZE,
            "cache": _CACHE,
        },
        description="your volumes: DATA_DIR/<class>/*.npy|npz (NumPy) or *.nii|nii.gz (nibabel)",
        kind="volume",
        shape="Cx(D)x(H)x(W) from files",
        classes="one per subfolder",
        needs_data_dir=True,
        extras=("nibabel for NIfTI",),
    )
)
