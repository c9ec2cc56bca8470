"""excite: rank-generic attention for 1D, 2D and 3D convolutional networks.

The public names below are loaded on first use (PEP 562), so ``import excite`` stays
cheap and needs only torch and numpy; each submodule imports its optional extras
lazily with an install hint when they are missing.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # layers
    "SqueezeExcite": "excite.layers",
    "ChannelAttention": "excite.layers",
    "SpatialAttention": "excite.layers",
    "CBAM": "excite.layers",
    "ECA": "excite.layers",
    "SCSE": "excite.layers",
    "create_attention": "excite.layers",
    "list_attention": "excite.layers",
    "register_attention": "excite.layers",
    "attention_factory": "excite.layers",
    "AttentionFactory": "excite.layers",
    # models
    "create_model": "excite.models",
    "list_models": "excite.models",
    # side tools
    "profile": "excite.profiling",
    "load_run": "excite.runs",
    "export": "excite.exporting",
    "ExportReport": "excite.exporting",
    "capture_attention": "excite.capture",
    "visualize": "excite.viz",
    # users' own models and weights
    "attach_attention": "excite.interop",
    "inflate": "excite.interop",
    "convert_state_dict": "excite.interop",
    "AttachReport": "excite.interop",
}

# subpackages and modules reachable as attributes (``excite.models.create_model``)
_SUBMODULES = frozenset({
    "checks", "cli", "data", "engine", "errors", "interop", "kernels", "layers", "models",
    "profiling", "runs", "exporting", "capture", "viz",
})

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f"excite.{name}")
    else:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'excite' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
