"""Built-in synthetic datasets, generated on the fly from ``(seed, split, index)``.

``moving-shapes`` (video, ``(1, T, H, W)``): one object drifts in a fixed direction
across a scene that wraps around at its borders (a torus); the label is the direction.
Because the scene wraps and the start point is uniform, the object's position in any
single frame is uniform whatever the label, and its shape, size and brightness are
drawn independently of the label: one frame carries no information about the class;
only the change between frames does. Optional distractors wander in a random walk
(no net drift) and Gaussian noise is added.

``shapes3d`` (volume, ``(1, D, H, W)``): one solid (sphere, cube, cylinder, cone,
torus, octahedron, capsule) at a random 3D rotation, size and position, plus noise;
the label is the solid.

Objects are drawn from signed distance functions with a one-voxel soft edge
(coverage ``clip(0.5 - d, 0, 1)``, ``d`` in pixels), all in vectorised NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from excite.data._common import IndexedDataset, rng_for
from excite.data.options import Bool, Float, Int, Names, Option, Optional, Range, Size
from excite.data.registry import DatasetInfo, DatasetSpec, DataSplits, register_dataset

_TRAIN, _VAL = 0, 1

# --------------------------------------------------------------------------- 2D shapes

#: Motion classes of moving-shapes, in label order; unit direction (dx, dy), y down.
MOTIONS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "down": (0.0, 1.0),
    "up": (0.0, -1.0),
    "down-right": (0.5**0.5, 0.5**0.5),
    "up-left": (-(0.5**0.5), -(0.5**0.5)),
    "down-left": (-(0.5**0.5), 0.5**0.5),
    "up-right": (0.5**0.5, -(0.5**0.5)),
}


def _sdf_disk(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.sqrt(u * u + v * v) - r


def _sdf_square(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r


def _sdf_triangle(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    # equilateral triangle, circumradius r: max over the 3 edge normals of n·p - r/2
    c, s = 0.5 * 3**0.5, 0.5
    return np.maximum(np.maximum(-v, c * u + s * v), -c * u + s * v) - 0.5 * r


def _sdf_cross(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    au, av, w = np.abs(u), np.abs(v), 0.35 * r
    return np.minimum(np.maximum(au - r, av - w), np.maximum(au - w, av - r))


def _sdf_ring(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.abs(np.sqrt(u * u + v * v) - 0.7 * r) - 0.3 * r


SHAPES_2D: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "disk": _sdf_disk,
    "square": _sdf_square,
    "triangle": _sdf_triangle,
    "cross": _sdf_cross,
    "ring": _sdf_ring,
}


def render_2d(
    shape: str,
    centres: np.ndarray,
    radius: float,
    angle: float,
    size: tuple[int, int],
) -> np.ndarray:
    """Coverage of ``shape`` at each centre on a wrap-around canvas.

    Args:
        shape: a key of :data:`SHAPES_2D`.
        centres: ``(T, 2)`` object centres ``(x, y)`` in pixels (any real values; the
            canvas wraps, so ``x`` is taken modulo ``W``).
        radius: object radius in pixels.
        angle: rotation in radians.
        size: ``(H, W)``.

    Returns:
        float32 ``(T, H, W)`` in ``[0, 1]``.
    """
    h, w = size
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    cx = centres[:, 0].astype(np.float32)[:, None, None]
    cy = centres[:, 1].astype(np.float32)[:, None, None]
    dx = (xs - cx + w / 2) % w - w / 2  # shortest signed offset on the torus
    dy = (ys - cy + h / 2) % h - h / 2
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    d = SHAPES_2D[shape](u, v, np.float32(radius))
    return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32, copy=False)


def make_moving_shapes_clip(
    rng: np.random.Generator,
    label: int,
    *,
    motions: tuple[str, ...],
    shapes: tuple[str, ...],
    frames: int,
    size: tuple[int, int],
    speed: tuple[float, float],
    radius: tuple[float, float],
    distractors: int,
    noise: float,
) -> np.ndarray:
    """One ``(T, H, W)`` float32 clip whose target object moves in ``motions[label]``."""
    h, w = size
    t = np.arange(frames, dtype=np.float64)[:, None]
    clip = np.zeros((frames, h, w), dtype=np.float32)
    for k in range(1 + distractors):
        shape = shapes[rng.integers(len(shapes))]
        r = rng.uniform(*radius)
        angle = rng.uniform(0.0, 2 * np.pi)
        amplitude = np.float32(rng.uniform(0.5, 1.0))
        start = rng.uniform((0.0, 0.0), (w, h))
        step = rng.uniform(*speed)
        if k == 0:  # the target: constant velocity along the class direction
            centres = start + t * step * np.asarray(MOTIONS[motions[label]])
        else:  # a distractor: random walk, no net drift
            theta = rng.uniform(0.0, 2 * np.pi, size=frames - 1)
            steps = step * np.stack([np.cos(theta), np.sin(theta)], axis=1)
            centres = start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
        np.maximum(clip, amplitude * render_2d(shape, centres, r, angle, size), out=clip)
    if noise > 0:
        clip += rng.standard_normal(clip.shape, dtype=np.float32) * np.float32(noise)
    return clip


@dataclass(frozen=True)
class _ClipMaker:
    """Sample ``index`` of one split: ``(clip (1, T, H, W), label)``; picklable, so
    DataLoader workers started by spawn/forkserver get the same samples."""

    seed: int
    split: int
    num_classes: int
    params: dict[str, Any]

    def __call__(self, index: int) -> tuple[torch.Tensor, int]:
        label = index % self.num_classes
        clip = make_moving_shapes_clip(rng_for(self.seed, self.split, index), label, **self.params)
        return torch.from_numpy(clip).unsqueeze(0), label


def _resolve_classes(option: Option, classes: tuple[str, ...], num_classes: int | None) -> tuple[str, ...]:
    """``classes``, or the first ``num_classes`` of the default list (its alias)."""
    if num_classes is None:
        return classes
    if classes != option.default:
        raise ValueError("give either 'classes' or its alias 'num_classes', not both")
    return option.kind("num_classes", num_classes)


def _default_val_size(val_size: int | None, train_size: int, val_fraction: float, num_classes: int) -> int:
    """``val_size``, or the size that makes it ``val_fraction`` of all samples (>= one per class)."""
    if val_size is not None:
        return val_size
    return max(num_classes, int(round(train_size * val_fraction / (1.0 - val_fraction))))


def _generated_splits(
    spec: DatasetSpec,
    classes: tuple[str, ...],
    sample_shape: tuple[int, ...],
    train_size: int,
    val_size: int,
    maker: Callable[[int], Callable[[int], tuple[torch.Tensor, int]]],
    *,
    cache: bool,
) -> DataSplits:
    """Train/val splits of a generated 3D dataset: sample i of a split is ``maker(split)(i)``."""
    info = DatasetInfo(
        name=spec.name,
        num_classes=len(classes),
        in_channels=sample_shape[0],
        spatial_dims=len(sample_shape) - 1,
        sample_shape=sample_shape,
        class_names=tuple(classes),
        description=spec.description,
    )
    return DataSplits(
        train=IndexedDataset(train_size, maker(_TRAIN), cache=cache),
        val=IndexedDataset(val_size, maker(_VAL), cache=cache),
        info=info,
    )


def build_moving_shapes(
    *,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    train_size: int,
    val_size: int | None,
    frames: int,
    size: tuple[int, int],
    classes: tuple[str, ...],
    num_classes: int | None,
    shapes: tuple[str, ...],
    speed: tuple[float, float],
    radius: tuple[float, float],
    distractors: int,
    noise: float,
    cache: bool,
) -> DataSplits:
    """Build moving-shapes (see the module docstring and docs/data.md)."""
    del data_dir, strict  # no files
    classes = _resolve_classes(MOVING_SHAPES_OPTIONS["classes"], classes, num_classes)
    val_size = _default_val_size(val_size, train_size, val_fraction, len(classes))
    if radius[1] * 2 >= min(size):
        raise ValueError(f"option 'radius' {radius} is too large for frames of size {size}")
    params = dict(
        motions=classes,
        shapes=shapes,
        frames=frames,
        size=size,
        speed=speed,
        radius=radius,
        distractors=distractors,
        noise=noise,
    )

    def maker(split: int) -> _ClipMaker:
        return _ClipMaker(seed=seed, split=split, num_classes=len(classes), params=params)

    return _generated_splits(
        MOVING_SHAPES, classes, (1, frames, *size), train_size, val_size, maker, cache=cache
    )


MOVING_SHAPES_OPTIONS: dict[str, Option] = {
    "train_size": Option(2000, Int(1), "number of training clips"),
    "val_size": Option(
        None, Optional(Int(1)), "number of validation clips (none: train_size * val_fraction / (1 - val_fraction))"
    ),
    "frames": Option(16, Int(2), "frames per clip (T)"),
    "size": Option((64, 64), Size(2, low=8), "frame size H x W in pixels"),
    "classes": Option(
        tuple(list(MOTIONS)[:4]),
        Names(list(MOTIONS)),
        "motion classes, in label order",
    ),
    "num_classes": Option(None, Optional(Int(2, len(MOTIONS))), "alias of classes=k"),
    "shapes": Option(tuple(SHAPES_2D), Names(list(SHAPES_2D), low=1), "object shapes drawn at random (not the label)"),
    "speed": Option((1.5, 3.0), Range(0.0), "target speed in pixels per frame, drawn uniformly from low,high"),
    "radius": Option((5.0, 9.0), Range(1.0), "object radius in pixels, drawn uniformly from low,high"),
    "distractors": Option(0, Int(0, 16), "extra objects that wander in a random walk (no net drift)"),
    "noise": Option(0.1, Float(0.0), "standard deviation of additive Gaussian noise (objects are 0.5-1.0)"),
    "cache": Option(False, Bool(), "keep generated clips in memory (float32: T*H*W*4 bytes each)"),
}

MOVING_SHAPES = register_dataset(
    DatasetSpec(
        name="moving-shapes",
        build=build_moving_shapes,
        options=MOVING_SHAPES_OPTIONS,
        description="synthetic video: an object drifts across a wrap-around scene; label = its direction "
        "(one frame is uninformative)",
        kind="video",
        shape="1x16x64x64",
        classes="4 (right, left, down, up; up to 8 directions)",
    )
)

# --------------------------------------------------------------------------- 3D shapes


def _radial(p: np.ndarray) -> np.ndarray:
    return np.sqrt(p[0] ** 2 + p[1] ** 2)


SHAPES_3D: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    # p: (3, ...) local coordinates in voxels; r: bounding radius in voxels
    "sphere": lambda p, r: np.sqrt((p**2).sum(0)) - 0.8 * r,
    "cube": lambda p, r: np.abs(p).max(0) - 0.55 * r,
    "cylinder": lambda p, r: np.maximum(_radial(p) - 0.55 * r, np.abs(p[2]) - 0.7 * r),
    # cone: apex at z = +0.8r, base radius 0.7r at z = -0.8r
    "cone": lambda p, r: np.maximum(
        (_radial(p) - 0.7 * r * (0.8 * r - p[2]) / (1.6 * r)) * 0.9, np.abs(p[2]) - 0.8 * r
    ),
    "torus": lambda p, r: np.sqrt((_radial(p) - 0.62 * r) ** 2 + p[2] ** 2) - 0.3 * r,
    "octahedron": lambda p, r: (np.abs(p).sum(0) - 0.95 * r) / 3**0.5,
    "capsule": lambda p, r: np.sqrt(
        p[0] ** 2 + p[1] ** 2 + np.maximum(np.abs(p[2]) - 0.55 * r, 0.0) ** 2
    )
    - 0.4 * r,
}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3x3 rotation matrix (normalised Gaussian quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def make_shapes3d_volume(
    rng: np.random.Generator,
    shape: str,
    *,
    size: tuple[int, int, int],
    radius: tuple[float, float],
    noise: float,
) -> np.ndarray:
    """One ``(D, H, W)`` float32 volume holding ``shape`` at a random pose."""
    extent = np.asarray(size, dtype=np.float64)
    r = rng.uniform(*radius) * extent.min() / 2
    centre = rng.uniform(np.minimum(r, extent / 2), np.maximum(extent - r, extent / 2))
    rot = random_rotation(rng)
    grid = np.stack(
        np.meshgrid(*(np.arange(n, dtype=np.float32) for n in size), indexing="ij")
    ) - centre.astype(np.float32)[:, None, None, None]
    local = np.tensordot(rot.T.astype(np.float32), grid, axes=1)  # p = R^T (x - c)
    d = SHAPES_3D[shape](local, np.float32(r))
    vol = np.clip(0.5 - d, 0.0, 1.0).astype(np.float32) * np.float32(rng.uniform(0.5, 1.0))
    if noise > 0:
        vol += rng.standard_normal(vol.shape, dtype=np.float32) * np.float32(noise)
    return vol


@dataclass(frozen=True)
class _VolumeMaker:
    """Sample ``index`` of one split: ``(volume (1, D, H, W), label)``; picklable."""

    seed: int
    split: int
    classes: tuple[str, ...]
    size: tuple[int, int, int]
    radius: tuple[float, float]
    noise: float

    def __call__(self, index: int) -> tuple[torch.Tensor, int]:
        label = index % len(self.classes)
        vol = make_shapes3d_volume(
            rng_for(self.seed, self.split, index), self.classes[label], size=self.size, radius=self.radius,
            noise=self.noise,
        )
        return torch.from_numpy(vol).unsqueeze(0), label


def build_shapes3d(
    *,
    data_dir: Path | None,
    val_fraction: float,
    seed: int,
    strict: bool,
    train_size: int,
    val_size: int | None,
    size: tuple[int, int, int],
    classes: tuple[str, ...],
    num_classes: int | None,
    radius: tuple[float, float],
    noise: float,
    cache: bool,
) -> DataSplits:
    """Build shapes3d (see the module docstring and docs/data.md)."""
    del data_dir, strict
    classes = _resolve_classes(SHAPES3D_OPTIONS["classes"], classes, num_classes)
    if radius[1] > 1.0:
        raise ValueError(f"option 'radius' is a fraction of half the smallest side, at most 1, got {radius}")
    val_size = _default_val_size(val_size, train_size, val_fraction, len(classes))

    def maker(split: int) -> _VolumeMaker:
        return _VolumeMaker(seed=seed, split=split, classes=classes, size=size, radius=radius, noise=noise)

    return _generated_splits(
        SHAPES3D, classes, (1, *size), train_size, val_size, maker, cache=cache
    )


SHAPES3D_OPTIONS: dict[str, Option] = {
    "train_size": Option(1000, Int(1), "number of training volumes"),
    "val_size": Option(
        None, Optional(Int(1)), "number of validation volumes (none: train_size * val_fraction / (1 - val_fraction))"
    ),
    "size": Option((32, 32, 32), Size(3, low=8), "volume size D x H x W in voxels"),
    "classes": Option(
        tuple(list(SHAPES_3D)[:5]),
        Names(list(SHAPES_3D)),
        "solids, in label order",
    ),
    "num_classes": Option(None, Optional(Int(2, len(SHAPES_3D))), "alias of classes=k"),
    "radius": Option(
        (0.5, 0.9), Range(0.05), "bounding radius as a fraction of half the smallest side, drawn from low,high"
    ),
    "noise": Option(0.1, Float(0.0), "standard deviation of additive Gaussian noise (solids are 0.5-1.0)"),
    "cache": Option(False, Bool(), "keep generated volumes in memory (float32: D*H*W*4 bytes each)"),
}

SHAPES3D = register_dataset(
    DatasetSpec(
        name="shapes3d",
        build=build_shapes3d,
        options=SHAPES3D_OPTIONS,
        description="synthetic volumes: a solid at random 3D pose, size and position; label = the solid",
        kind="volume",
        shape="1x32x32x32",
        classes="5 (sphere, cube, cylinder, cone, torus; up to 7)",
    )
)
