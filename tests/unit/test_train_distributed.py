"""Collectives under real process groups: gloo here (CI), NCCL where two GPUs exist.

The NCCL defect (CPU tensors all-reduced on an NCCL-only group) cannot be reproduced without
GPUs. What CI proves: the backend -> group routing (NCCL gets a gloo side group), and that
every host collective runs correctly *through* a real gloo side group created next to the
default group, as it is on GPU workers. The CUDA test runs the same code under NCCL.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steam_ray.train import distributed
from steam_ray.train.metrics import classification_metrics, gather_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("backend", "side"),
    [("nccl", True), ("NCCL", True), ("gloo", False), ("cpu:gloo,cuda:nccl", False)],
)
def test_nccl_backends_get_a_gloo_side_group(backend: str, side: bool) -> None:
    assert distributed.needs_side_group(backend) is side


def _rank_main(rank: int, world: int, port: int, backend: str, force_side: bool, out: Any) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        distributed.init_host_group(force_side_group=force_side)
        full = distributed.step_rows(3 + rank)  # rank 0: 3 rows, rank 1: 4
        partial = distributed.step_rows(None if rank == 1 else 5)  # rank 1 ran out
        objs = distributed.gather_objects({"rank": rank})
        probs, labels = ([0.9, 0.2], [1, 0]) if rank == 0 else ([0.7, 0.4, 0.6], [1, 1, 0])
        metrics = gather_metrics(probs, labels, float(len(labels)))
        out.put((rank, distributed.uses_side_group(), full, partial, objs, metrics))
    finally:
        dist.destroy_process_group()


def _run_two_ranks(backend: str, force_side: bool) -> dict[int, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(r, 2, port, backend, force_side, queue))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    results = {r[0]: r[1:] for r in (queue.get(timeout=180) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def _check(results: dict[int, Any], side: bool) -> None:
    whole = classification_metrics([0.9, 0.2, 0.7, 0.4, 0.6], [1, 0, 1, 1, 0], 5.0)
    for rank in (0, 1):
        uses_side, full, partial, objs, metrics = results[rank]
        assert uses_side is side
        assert full == 7  # rows summed over ranks
        assert partial is None  # one rank has no full step: nobody steps
        assert objs == [{"rank": 0}, {"rank": 1}]
        assert metrics == pytest.approx(whole)


@pytest.mark.parametrize("force_side", [False, True], ids=["default-gloo", "gloo-side-group"])
def test_host_collectives_on_real_gloo_groups(force_side: bool) -> None:
    _check(_run_two_ranks("gloo", force_side), side=force_side)


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="NCCL needs 2 CUDA devices (one per rank); none on this machine",
)
def test_host_collectives_under_nccl() -> None:
    _check(_run_two_ranks("nccl", force_side=False), side=True)


def test_host_collectives_refuse_before_init() -> None:
    distributed._HOST_GROUP_READY = False
    with pytest.raises(RuntimeError, match="init_host_group"):
        distributed.host_group()
