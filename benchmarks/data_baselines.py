"""Measure the built-in datasets: generation speed, and for moving-shapes how much a
single frame vs. consecutive frames tell about the label (nearest-class-mean baselines).

    python benchmarks/data_baselines.py            # the numbers quoted in docs/data.md
    python benchmarks/data_baselines.py --n 400    # quicker

Never run by the test suite (tests/data/test_synthetic.py runs the same check small).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from excite.data import load_splits


def stack(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs).numpy(), np.asarray(ys)


def centroid_accuracy(f_tr, y_tr, f_te, y_te) -> float:
    classes = np.unique(y_tr)
    means = np.stack([f_tr[y_tr == c].mean(0) for c in classes])
    dist = ((f_te[:, None, :] - means[None]) ** 2).sum(-1)
    return float((classes[dist.argmin(1)] == y_te).mean())


def phasors(spectrum: np.ndarray) -> np.ndarray:
    z = np.stack([spectrum[..., 0, 1], spectrum[..., 1, 0]], -1)
    z = z / (np.abs(z) + 1e-9)
    return np.concatenate([z.real, z.imag], -1)


def baselines(n: int, **options) -> dict[str, float]:
    splits = load_splits("moving-shapes", seed=0, train_size=n, val_size=n, **options)
    x_tr, y_tr = stack(splits.train)
    x_te, y_te = stack(splits.val)
    x_tr, x_te = x_tr[:, 0], x_te[:, 0]
    mid = x_tr.shape[1] // 2
    out = {"chance": 1 / splits.info.num_classes}
    out["one frame, pixels"] = centroid_accuracy(
        x_tr[:, mid].reshape(n, -1), y_tr, x_te[:, mid].reshape(n, -1), y_te
    )
    f_tr, f_te = np.fft.fft2(x_tr), np.fft.fft2(x_te)
    out["one frame, position phase"] = centroid_accuracy(phasors(f_tr[:, mid]), y_tr, phasors(f_te[:, mid]), y_te)
    d_tr = (x_tr[:, mid + 1] - x_tr[:, mid]).reshape(n, -1)
    d_te = (x_te[:, mid + 1] - x_te[:, mid]).reshape(n, -1)
    out["frame difference, pixels"] = centroid_accuracy(d_tr, y_tr, d_te, y_te)
    c_tr = (f_tr[:, 1:] * np.conj(f_tr[:, :-1])).sum(1)
    c_te = (f_te[:, 1:] * np.conj(f_te[:, :-1])).sum(1)
    out["all frames, motion phase"] = centroid_accuracy(phasors(c_tr), y_tr, phasors(c_te), y_te)
    return out


def speed(name: str, n: int, **options) -> float:
    ds = load_splits(name, seed=0, train_size=n, **options).train
    start = time.perf_counter()
    for i in range(n):
        ds[i]
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="clips per split for the baselines")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"moving-shapes default (1x16x64x64): {speed('moving-shapes', 300):.2f} ms per clip")
    print(f"moving-shapes distractors=2:       {speed('moving-shapes', 300, distractors=2):.2f} ms per clip")
    print(f"shapes3d default (1x32x32x32):      {speed('shapes3d', 300):.2f} ms per volume")
    start = time.perf_counter()
    load_splits("fashion-mnist")
    print(f"fashion-mnist load (60k + 10k, gz): {time.perf_counter() - start:.2f} s")
    print(f"\nnearest-class-mean accuracy on moving-shapes, {args.n} train / {args.n} val clips")
    for label, options in [
        ("defaults (4 classes)", {}),
        ("classes=8", {"classes": 8}),
        ("distractors=2", {"distractors": 2}),
        ("noise=0.3", {"noise": 0.3}),
    ]:
        row = baselines(args.n, **options)
        print(f"  {label:22s} " + "  ".join(f"{k}: {v:.3f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
