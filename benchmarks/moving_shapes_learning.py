"""How quickly a small 3D CNN learns a built-in dataset: tiny_resnet + CBAM, AdamW with
a one-cycle schedule, validation accuracy after every epoch.

    OMP_NUM_THREADS=1 python benchmarks/moving_shapes_learning.py size=32 radius=3,5
    OMP_NUM_THREADS=1 python benchmarks/moving_shapes_learning.py size=32 radius=3,5 distractors=2 classes=8
    OMP_NUM_THREADS=1 python benchmarks/moving_shapes_learning.py data=shapes3d

Arguments are dataset options (key=value) plus data= (default moving-shapes), epochs=,
bs= and lr=. A plain
training loop, independent of excite.engine, to size the dataset's defaults.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.utils.data import DataLoader

import excite
from excite.data import load_splits, parse_data_options


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    given = dict(arg.split("=", 1) for arg in argv)
    epochs = int(given.pop("epochs", 3))
    batch = int(given.pop("bs", 32))
    lr = float(given.pop("lr", 2e-3))
    data = given.pop("data", "moving-shapes")
    options = parse_data_options(data, [f"{k}={v}" for k, v in given.items()])
    splits = load_splits(data, seed=0, **options)
    model = excite.create_model(
        "tiny_resnet", attention="cbam", num_classes=splits.info.num_classes, in_channels=1, spatial_dims=3
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    train = DataLoader(splits.train, batch_size=batch, shuffle=True)
    val = DataLoader(splits.val, batch_size=64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(train))
    start = time.perf_counter()
    print(
        f"{data} {options}: {len(splits.train)} train / {len(splits.val)} val samples, "
        f"threads {torch.get_num_threads()}"
    )
    for epoch in range(epochs):
        model.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        print(f"epoch {epoch + 1}: val acc {correct / total:.3f}, wall {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
