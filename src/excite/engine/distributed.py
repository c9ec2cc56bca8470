"""Process-group setup for ``torchrun --nproc-per-node=N -m excite train``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; when ``WORLD_SIZE`` > 1 we join the group (gloo on CPU, nccl on CUDA).
Only rank 0 logs and writes files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from excite.errors import ExciteError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``; ``device`` it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without CUDA raises."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but CUDA is not available")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1, else run single-process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(device=dev)
    if dist.is_initialized():  # the caller set the group up itself
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=False)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=True)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def any_true(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on any rank (collective when distributed)."""
    if not ctx.distributed:
        return flag
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def any_true_each(flags: tuple[bool, ...], ctx: DistContext) -> tuple[bool, ...]:
    """For each flag: True on every rank when it is true on any rank (one collective)."""
    if not ctx.distributed:
        return tuple(flags)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    value = torch.tensor([1 if f else 0 for f in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in value.tolist())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_on_main(fn: Callable[[], T], ctx: DistContext) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result (collective when
    distributed): how rank 0 alone decides something all ranks need, such as the run
    directory's name.

    Raises:
        ExciteError, ValueError, FileNotFoundError: what ``fn`` raised on rank 0 (the same
            message on every rank; other ranks raise it as ``ExciteError`` unless it was
            a ``ValueError`` or ``FileNotFoundError``).
    """
    if not ctx.distributed:
        return fn()
    result: object = None
    failure: tuple[str, str] | None = None
    if ctx.is_main:
        try:
            result = fn()
        except (ExciteError, ValueError, FileNotFoundError) as exc:
            failure = (type(exc).__name__, str(exc))
            error: BaseException = exc
    result, failure = broadcast_object((result, failure), ctx)  # type: ignore[misc]
    if failure is not None:
        if ctx.is_main:
            raise error
        kind = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}.get(failure[0], ExciteError)
        raise kind(failure[1])
    return result  # type: ignore[return-value]
