"""Collectives that work under every process-group backend Ray Train sets up.

On GPU workers Ray's default process group is NCCL, which only takes CUDA tensors; the
gradient all-reduce (DDP) belongs there. Control values (does every rank still have a step?
how many rows does the step hold?) and Python objects (metrics, checksums) are host data, so
they go through a gloo *side group* over CPU tensors: no CPU->GPU copy, and no host sync with
the CUDA stream in the middle of a step. On CPU workers the default group is already gloo and
is used as is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

_HOST_GROUP: Any = None
_HOST_GROUP_READY = False


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def needs_side_group(backend: str) -> bool:
    """True when the default backend cannot reduce CPU tensors (NCCL without a gloo part).

    ``backend`` is ``dist.get_backend()``: ``"gloo"``, ``"nccl"``, or a device map such as
    ``"cpu:gloo,cuda:nccl"`` (which already routes CPU tensors to gloo).
    """
    parts = [p.split(":")[-1] for p in backend.lower().split(",")]
    return "gloo" not in parts


def init_host_group(force_side_group: bool = False) -> None:
    """Create the gloo side group if the backend needs one. Every rank must call this, once,
    at the same point (``new_group`` is itself a collective)."""
    global _HOST_GROUP, _HOST_GROUP_READY
    _HOST_GROUP = None
    if distributed() and (force_side_group or needs_side_group(str(dist.get_backend()))):
        _HOST_GROUP = dist.new_group(backend="gloo")
    _HOST_GROUP_READY = True


def host_group() -> Any:
    """The group for CPU tensors and objects (None: the default group)."""
    if not _HOST_GROUP_READY:
        raise RuntimeError("init_host_group() must run on every rank before host collectives")
    return _HOST_GROUP


def uses_side_group() -> bool:
    return host_group() is not None


def step_rows(rows: int | None) -> int | None:
    """Rows of this optimizer step summed over ranks, or None if any rank has no full step.

    One CPU all-reduce per step keeps DDP step counts equal across ranks (streaming_split and
    token-budget batching give ranks different batch counts) and gives the loss its global
    denominator.
    """
    if not distributed():
        return rows
    t = torch.tensor([1 if rows is not None else 0, rows or 0], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=host_group())
    have, total = (int(v) for v in t.tolist())
    return total if have == dist.get_world_size() else None


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (pickled over the host group)."""
    if not distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=host_group())
    return out
