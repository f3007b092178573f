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


def _ddp_rank_main(rank: int, port: int, model_path: str, run_dir: str, out: Any) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from steam_ray.config import TrainConfig
    from steam_ray.train.data import pad_batch
    from steam_ray.train.recipe import FineTuneRecipe

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        distributed.init_host_group()
        run = {"train_rows": 8, "train_tokens": 80, "train_positive": 4, "train_negative": 4}
        cfg = TrainConfig(model=model_path, max_steps=1)
        recipe = FineTuneRecipe(cfg, {**run, "run_dir": run_dir}, rank=rank, world_size=2)
        recipe.setup(wrap=lambda m: DistributedDataParallel(m))
        recipe.raw.eval()  # no dropout: gradients comparable with the reference
        tok = recipe.tokenizer
        texts = ["great", "awful crash", "fun game with friends", "broken", "love it", "waste"]
        texts += ["the story is a masterpiece and the graphics are beautiful", "refund"]
        labels = [1, 0, 1, 0, 1, 0, 1, 0]

        def batch(idx: list[int]) -> Any:
            ids = tok([texts[i] for i in idx])["input_ids"]
            return pad_batch(ids, [labels[i] for i in idx], recipe.pad_id)

        # Rank 0 holds 2 rows, rank 1 holds 6, in micro-batches of different sizes.
        micro = [batch([0]), batch([1])] if rank == 0 else [batch([2, 3]), batch([4, 5, 6, 7])]
        rows = distributed.step_rows(sum(int(b["labels"].shape[0]) for b in micro))
        assert rows == 8
        recipe.accumulate(micro, rows)
        ddp = torch.cat([p.grad.flatten() for p in recipe.raw.parameters() if p.grad is not None])
        # Reference: the plain mean loss over all 8 rows in one process, no DDP.
        recipe.optimizer.zero_grad(set_to_none=True)
        whole = batch(list(range(8)))
        logits = recipe.raw(
            input_ids=whole["input_ids"], attention_mask=whole["attention_mask"]
        ).logits
        torch.nn.functional.cross_entropy(logits, whole["labels"]).backward()
        ref = torch.cat([p.grad.flatten() for p in recipe.raw.parameters() if p.grad is not None])
        out.put((rank, bool(torch.allclose(ddp, ref, rtol=1e-4, atol=1e-6))))
    finally:
        dist.destroy_process_group()


def test_ddp_gradient_is_the_mean_over_every_row_of_every_rank(
    minilm_path: str, tmp_path: Any
) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_ddp_rank_main, args=(r, port, minilm_path, str(tmp_path), queue))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results == {0: True, 1: True}
