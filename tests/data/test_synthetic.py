"""Built-in synthetic datasets: determinism, shapes, labels, and the properties that
make them useful (moving-shapes: the label is in the motion, not in any one frame)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from excite.data import load_splits

SMALL_CLIPS = dict(train_size=24, val_size=12, frames=6, size=(24, 24), radius=(3.0, 5.0))
SMALL_VOLS = dict(train_size=14, val_size=7, size=(16, 16, 16))


def _stack(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs).numpy(), np.asarray(ys)


@pytest.mark.parametrize(
    "name, options, shape",
    [
        ("moving-shapes", SMALL_CLIPS, (1, 6, 24, 24)),
        ("shapes3d", SMALL_VOLS, (1, 16, 16, 16)),
    ],
)
def test_shapes_dtypes_labels(name, options, shape):
    splits = load_splits(name, seed=3, **options)
    assert splits.info.sample_shape == shape
    assert splits.info.in_channels == 1 and splits.info.spatial_dims == 3
    assert len(splits.train) == options["train_size"] and len(splits.val) == options["val_size"]
    for ds in (splits.train, splits.val):
        x, y = _stack(ds)
        assert x.dtype == np.float32 and x.shape[1:] == shape
        assert np.isfinite(x).all()
        assert y.dtype.kind == "i" and set(y.tolist()) == set(range(splits.info.num_classes))
        # labels are balanced: counts differ by at most one
        counts = np.bincount(y, minlength=splits.info.num_classes)
        assert counts.max() - counts.min() <= 1
    assert isinstance(splits.train[0][1], int)


@pytest.mark.parametrize("name, options", [("moving-shapes", SMALL_CLIPS), ("shapes3d", SMALL_VOLS)])
def test_determinism(name, options):
    a = load_splits(name, seed=7, **options)
    b = load_splits(name, seed=7, **options)
    c = load_splits(name, seed=8, **options)
    for i in (0, 5, len(a.train) - 1):
        assert torch.equal(a.train[i][0], b.train[i][0])
    # access order does not matter: read b backwards
    back = [b.val[i][0] for i in reversed(range(len(b.val)))][::-1]
    assert all(torch.equal(a.val[i][0], back[i]) for i in range(len(a.val)))
    # another seed, and the other split, give other samples
    assert not torch.equal(a.train[0][0], c.train[0][0])
    assert not torch.equal(a.train[0][0], a.val[0][0])
    # validation samples do not depend on the training-set size
    d = load_splits(name, seed=7, **{**options, "train_size": 3})
    assert torch.equal(a.val[2][0], d.val[2][0])


def test_cache_returns_same_values_and_copies():
    plain = load_splits("moving-shapes", seed=1, **SMALL_CLIPS)
    cached = load_splits("moving-shapes", seed=1, cache=True, **SMALL_CLIPS)
    x1 = cached.train[4][0]
    x1.zero_()  # a caller writing into a sample must not corrupt the cache
    assert torch.equal(cached.train[4][0], plain.train[4][0])


def test_val_size_follows_val_fraction():
    splits = load_splits("moving-shapes", train_size=60, val_fraction=0.25, frames=2, size=16, radius=2)
    assert len(splits.val) == 20  # 60 * 0.25 / 0.75


def test_noise_is_additive_gaussian_with_given_std():
    # noise is drawn last, so the same seed with and without noise differs by the noise alone
    clean = load_splits("moving-shapes", seed=2, noise=0.0, **SMALL_CLIPS).train
    noisy = load_splits("moving-shapes", seed=2, noise=0.3, **SMALL_CLIPS).train
    diff = torch.stack([noisy[i][0] - clean[i][0] for i in range(8)])
    assert abs(diff.mean().item()) < 0.01
    assert diff.std().item() == pytest.approx(0.3, rel=0.03)
    clean3 = load_splits("shapes3d", seed=2, noise=0.0, **SMALL_VOLS).train
    noisy3 = load_splits("shapes3d", seed=2, noise=0.2, **SMALL_VOLS).train
    diff3 = noisy3[1][0] - clean3[1][0]
    assert diff3.std().item() == pytest.approx(0.2, rel=0.03)
    # without noise, pixels are coverage x brightness in [0, 1] and the object is visible
    x = clean[0][0]
    assert x.min().item() >= 0.0 and 0.5 <= x.max().item() <= 1.0


# ----------------------------------------------------------------- moving-shapes motion

DIRECTIONS = {  # unit vectors in (x, y) with y pointing down, from the class names
    "right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1),
    "down-right": (1, 1), "up-left": (-1, -1), "down-left": (-1, 1), "up-right": (1, -1),
}


def _phase_velocity(clip: np.ndarray) -> np.ndarray:
    """Mean per-frame displacement (vx, vy) of a (T, H, W) clip from the phase of the
    cross-power spectrum of consecutive frames (a shift by v multiplies the DFT at
    frequency k by exp(-2 pi i k v / N))."""
    t, h, w = clip.shape
    f = np.fft.fft2(clip)
    cross = (f[1:] * np.conj(f[:-1])).sum(0)
    vx = -np.angle(cross[0, 1]) * w / (2 * np.pi)
    vy = -np.angle(cross[1, 0]) * h / (2 * np.pi)
    return np.array([vx, vy])


def test_moving_shapes_target_moves_in_the_labelled_direction_at_the_given_speed():
    splits = load_splits(
        "moving-shapes", seed=0, train_size=16, val_size=8, frames=8, size=(48, 48),
        classes=8, noise=0.0, speed=(1.5, 3.0), radius=(4, 6),
    )
    names = splits.info.class_names
    assert names == tuple(DIRECTIONS)
    for i in range(16):
        x, y = splits.train[i]
        v = _phase_velocity(x[0].numpy())
        d = np.asarray(DIRECTIONS[names[y]], dtype=float)
        d /= np.linalg.norm(d)
        speed = float(v @ d)
        assert 1.4 <= speed <= 3.1, (i, names[y], v)
        assert abs(float(v @ np.array([-d[1], d[0]]))) < 0.15, (i, names[y], v)  # no sideways drift


def _centroid_accuracy(f_train, y_train, f_test, y_test) -> float:
    """Nearest class mean (Euclidean)."""
    classes = np.unique(y_train)
    means = np.stack([f_train[y_train == c].mean(0) for c in classes])
    dist = ((f_test[:, None, :] - means[None]) ** 2).sum(-1)
    return float((classes[dist.argmin(1)] == y_test).mean())


def _phasors(spectrum: np.ndarray) -> np.ndarray:
    """Unit phasors at the two lowest frequencies (0, 1) and (1, 0), as 4 reals."""
    z = np.stack([spectrum[..., 0, 1], spectrum[..., 1, 0]], -1)
    z = z / (np.abs(z) + 1e-9)
    return np.concatenate([z.real, z.imag], -1)


def test_moving_shapes_one_frame_is_near_chance_but_frame_pairs_are_not():
    """The same classifier (nearest class mean) on single-frame features scores near
    chance (1/4), on features of consecutive frames near perfect."""
    splits = load_splits(
        "moving-shapes", seed=0, train_size=240, val_size=240, frames=6, size=(32, 32), radius=(3, 5),
    )
    x_tr, y_tr = _stack(splits.train)
    x_te, y_te = _stack(splits.val)
    x_tr, x_te = x_tr[:, 0], x_te[:, 0]  # (N, T, H, W)
    n_tr, n_te = len(x_tr), len(x_te)
    chance = 1 / splits.info.num_classes
    # single frame, raw pixels (any frame)
    for t in (0, 3):
        acc = _centroid_accuracy(x_tr[:, t].reshape(n_tr, -1), y_tr, x_te[:, t].reshape(n_te, -1), y_te)
        assert acc < chance + 0.12, (t, acc)
    # single frame, position phase (where the object is)
    f_tr, f_te = np.fft.fft2(x_tr), np.fft.fft2(x_te)
    acc_pos = _centroid_accuracy(_phasors(f_tr[:, 2]), y_tr, _phasors(f_te[:, 2]), y_te)
    assert acc_pos < chance + 0.12
    # consecutive frames: phase of the cross-power spectrum (how the object moved)
    cross_tr = (f_tr[:, 1:] * np.conj(f_tr[:, :-1])).sum(1)
    cross_te = (f_te[:, 1:] * np.conj(f_te[:, :-1])).sum(1)
    acc_motion = _centroid_accuracy(_phasors(cross_tr), y_tr, _phasors(cross_te), y_te)
    assert acc_motion > 0.9


def test_distractors_add_objects_but_no_drift():
    base = dict(seed=4, train_size=8, val_size=4, frames=8, size=(48, 48), radius=(4, 5), noise=0.0)
    alone = load_splits("moving-shapes", distractors=0, **base).train
    crowded = load_splits("moving-shapes", distractors=3, **base).train
    # more objects cover more pixels
    lit_alone = sum((alone[i][0] > 0.25).float().mean().item() for i in range(8))
    lit_crowded = sum((crowded[i][0] > 0.25).float().mean().item() for i in range(8))
    assert lit_crowded > 2 * lit_alone


# ----------------------------------------------------------------------------- shapes3d


def test_shapes3d_torus_has_a_hole_at_its_centre_of_mass_and_solids_do_not():
    splits = load_splits(
        "shapes3d", seed=5, train_size=35, val_size=7, size=(32, 32, 32), noise=0.0, classes=7
    )
    names = splits.info.class_names
    assert names[:5] == ("sphere", "cube", "cylinder", "cone", "torus")
    for i in range(35):
        x, y = splits.train[i]
        vol = x[0].numpy().astype(np.float64)
        grid = np.indices(vol.shape).reshape(3, -1)
        centre = (grid * vol.reshape(-1)).sum(1) / vol.sum()
        value = vol[tuple(np.round(centre).astype(int))] / vol.max()
        if names[y] == "torus":
            assert value < 0.1, (i, value)
        else:
            assert value > 0.9, (i, names[y], value)


def test_shapes3d_random_pose_varies_the_object():
    splits = load_splits("shapes3d", seed=0, train_size=20, val_size=5, size=16, noise=0.0, classes=["cube", "cone"])
    cubes = [splits.train[i][0] for i in range(0, 20, 2)]
    # same class, different volumes (pose, size, position differ)
    assert all(not torch.allclose(cubes[0], c) for c in cubes[1:])
