"""Ray Train's side of a training worker, behind plain functions: who this rank is, its
device, the checkpoint to resume from, its dataset shards, reporting.

The recipe itself runs without Ray (tests build it directly); only this module talks to the
Ray Train context. Ray is imported inside each function: the module costs nothing to import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    device: torch.device
    node_id: str


def worker_context() -> WorkerContext:
    """This worker's world rank, world size, device and Ray node id."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    return WorkerContext(
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        node_id=ray.get_runtime_context().get_node_id(),
    )


def report(metrics: dict[str, Any], directory: str | None, name: str) -> None:
    """``ray.train.report`` of metrics and (if ``directory``) a checkpoint named ``name``."""
    import ray.train
    from ray.train import Checkpoint

    ckpt = Checkpoint.from_directory(directory) if directory is not None else None
    ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)


@contextlib.contextmanager
def latest_checkpoint() -> Iterator[tuple[str | None, str | None]]:
    """(local directory, persisted path) of the run's latest checkpoint, while in the block;
    (None, None) when the run starts fresh."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None, None
        return
    with checkpoint.as_directory() as directory:
        yield directory, checkpoint.path


def prepare_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model on this worker's device, wrapped for DDP when there are several workers."""
    import ray.train.torch

    prepared: torch.nn.Module = ray.train.torch.prepare_model(model)
    return prepared


def broadcast_from_rank_zero(value: T) -> T:
    """Rank 0's ``value`` on every rank (a collective: every rank must call it)."""
    from ray.train.collective import broadcast_from_rank_zero as broadcast

    result: T = broadcast(value)
    return result


def dataset_shards() -> tuple[Any, Any]:
    """This worker's (train, val) ``DataIterator`` shards."""
    import ray.train

    return ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
