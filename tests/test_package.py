"""``import excite`` resolves its subpackages and public names as attributes."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "expression",
    [
        "excite.models.load_torchvision_state_dict",
        "excite.kernels.set_default_impl",
        "excite.layers.attention_factory",
        "excite.data.list_datasets",
        "excite.engine.fit",
        "excite.attention_factory",
        "excite.create_model",
    ],
)
def test_attribute_resolves_in_a_fresh_interpreter(expression: str) -> None:
    code = f"import excite; assert callable({expression})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unknown_attribute_is_an_attribute_error() -> None:
    import excite

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        excite.nope  # noqa: B018
