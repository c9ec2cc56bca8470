"""The Python examples in docs/export.md run as written (in a scratch folder holding a run)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_doc_has_examples() -> None:
    assert BLOCKS


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(index: int, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module, reason="the export extra")
    shutil.copytree(tiny_run, tmp_path / "runs" / "tiny_resnet-cbam-moving-shapes-s0")
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"{DOC.name}[block {index}]", "exec"), {})
    assert (tmp_path / "tiny.onnx").is_file()
