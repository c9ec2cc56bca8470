"""The install story: what `pip install excite` brings, what each extra adds, and the
hint a missing optional package gives (pip names, no constraints file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from excite.errors import MissingDependencyError, install_hint, require

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_dependencies_are_enough_to_train():
    core = _names(_project()["dependencies"])
    assert {"torch", "numpy", "pyyaml", "safetensors", "tqdm"} <= core
    assert "matplotlib" not in core  # plots stay optional


def test_extras():
    extras = _project()["optional-dependencies"]
    assert _names(extras["train"]) == {"matplotlib"}
    assert _names(extras["data"]) == {"pillow", "av", "nibabel"}
    assert _names(extras["export"]) == {"onnx", "onnxscript", "onnxruntime"}
    assert _names(extras["tensorboard"]) == {"tensorboard"}
    dev = " ".join(extras["dev"])
    inner = set(re.search(r"excite\[([^\]]*)\]", dev).group(1).split(","))
    assert {"train", "data", "triton", "export", "tensorboard"} <= inner  # CI installs them all


@pytest.mark.parametrize(("module", "extra", "package"), [
    ("matplotlib", "train", "matplotlib"),
    ("yaml", "train", "PyYAML"),
    ("safetensors.torch", "train", "safetensors"),
    ("PIL.Image", "data", "pillow"),
    ("onnxruntime", "export", "onnxruntime"),
])
def test_install_hint_names_the_pip_package_and_the_extra(module, extra, package):
    assert install_hint(module, extra=extra) == f"pip install {package} (or pip install 'excite[{extra}]')"


def test_missing_package_error_works_outside_this_repository():
    with pytest.raises(MissingDependencyError) as info:
        require("excite_test_no_such_package.sub", extra="train", purpose="drawing plots")
    message = str(info.value)
    assert message.startswith("drawing plots needs the package 'excite_test_no_such_package'")
    assert message.endswith(
        "install it with: pip install excite_test_no_such_package (or pip install 'excite[train]')"
    )
    assert "constraints" not in message and "\n" not in message
    assert isinstance(info.value, ImportError)  # the CLI prints it as one line, exit 2


def test_readme_says_how_to_get_the_cpu_build_of_torch_elsewhere():
    text = (ROOT / "README.md").read_text()
    install = text[text.index("## Install"):]
    install = install[: install.index("\n## ", 1)]
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in install
    for extra in ("train", "data", "export", "tensorboard", "triton", "dev"):
        assert f"| `{extra}` |" in install
