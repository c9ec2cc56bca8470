"""The Python examples of docs/models.md run (except the torchvision download)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_examples_run():
    blocks = [b for b in _blocks() if "torchvision" not in b]
    assert len(blocks) == 2
    spaces: list[dict] = [{}, {}]
    for code, namespace in zip(blocks, spaces):
        exec(compile(code, str(DOC), "exec"), namespace)
    first, second = spaces
    assert tuple(first["logits"].shape) == (2, 10)
    assert second["p"].params > 31_505_325  # R(2+1)D-18 plus CBAM
    assert first["sig"].spatial_dims == 1 and first["vol"].in_channels == 1
