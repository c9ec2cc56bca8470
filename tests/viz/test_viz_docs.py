"""The Python examples in docs/visualize.md run as written (in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "visualize.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
PICTURES = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", DOC.read_text(encoding="utf-8"))


def test_doc_has_examples_and_its_pictures_exist() -> None:
    assert BLOCKS and PICTURES
    for name in PICTURES:
        assert (DOC.parent / name).read_bytes()[:4] == b"\x89PNG", name


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib", reason="the train extra")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(BLOCKS[index], f"{DOC.name}[block {index}]", "exec"), scope)
    assert scope["maps"]["layer2.0.attention.spatial"].shape == (2, 1, 8, 8)
    assert [p.name for p in scope["result"].files] == ["gates.png", "channel-gates.png"]
