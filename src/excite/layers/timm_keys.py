"""Renaming timm's attention state dicts to excite's keys (behind the ``*_from_timm``
functions of the family modules)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["rename_prefixes"]


def rename_prefixes(
    state_dict: Mapping[str, torch.Tensor],
    renames: Mapping[str, tuple[str, int | None]],
    *,
    module: str,
) -> dict[str, torch.Tensor]:
    """Rename every key by its prefix, reshaping weights whose kernel axes are 1-sized.

    ``renames`` maps a timm prefix to ``(excite prefix, start)``: a ``*.weight`` tensor
    with more than ``start + 1`` dims is flattened from dim ``start`` (``1``: a 1×1
    convolution's (O, I, 1, 1) weight as a Linear (O, I); ``2``: a (C, I, k, 1) or
    (C, I, 1, k) strip convolution as a Conv1d (C, I, k)); ``None`` keeps the shape.

    Raises:
        ValueError: a key under none of the prefixes (the message names it and
            ``module``).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(
                f"state_dict key {key!r} is not a key of timm's {module} "
                f"(expected prefixes: {', '.join(renames)})"
            )
        new_prefix, start = renames[prefix]
        if start is not None and key.endswith("weight") and value.ndim > start + 1:
            value = value.flatten(start)
        out[new_prefix + key[len(prefix):]] = value
    return out
