"""The Python examples in docs/layers.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from excite.layers import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "layers.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(index: int) -> None:
    before = dict(registry._REGISTRY)
    try:
        exec(compile(BLOCKS[index], f"{DOC.name}[block {index}]", "exec"), {})
    finally:  # an example may register a name
        registry._REGISTRY.clear()
        registry._REGISTRY.update(before)
