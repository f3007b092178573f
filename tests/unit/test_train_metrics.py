"""Validation metrics against sklearn, and the cross-rank gather with a real gloo group."""

from __future__ import annotations

import math
import os
import socket
from typing import Any

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from steam_ray.train.distributed import init_host_group
from steam_ray.train.metrics import classification_metrics, gather_metrics, json_safe, merge_parts

PROBS = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7, 0.4, 0.55, 0.45]
LABELS = [1, 1, 0, 0, 0, 1, 1, 0, 1, 1]


def test_metrics_match_sklearn() -> None:
    m = classification_metrics(PROBS, LABELS, loss_sum=5.0)
    pred = [int(p >= 0.5) for p in PROBS]
    assert m["accuracy"] == pytest.approx(accuracy_score(LABELS, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(LABELS, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(LABELS, PROBS))
    for c in (0, 1):
        assert m[f"precision_{c}"] == pytest.approx(precision_score(LABELS, pred, pos_label=c))
        assert m[f"recall_{c}"] == pytest.approx(recall_score(LABELS, pred, pos_label=c))
        assert m[f"f1_{c}"] == pytest.approx(f1_score(LABELS, pred, pos_label=c))
    assert m["loss"] == pytest.approx(0.5)
    assert m["num_examples"] == 10


def test_single_class_auc_is_nan_and_json_safe() -> None:
    m = classification_metrics([0.9, 0.2], [1, 1], loss_sum=1.0)
    assert math.isnan(m["roc_auc"])
    assert json_safe(m)["roc_auc"] is None
    assert m["recall_1"] == 0.5


def test_merge_parts_equals_whole() -> None:
    parts = [(PROBS[:3], LABELS[:3], 2.0), (PROBS[3:], LABELS[3:], 3.0)]
    assert merge_parts(parts) == pytest.approx(classification_metrics(PROBS, LABELS, 5.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rank_main(rank: int, world: int, port: int, out: Any) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    init_host_group()
    try:
        # Uneven shards: rank 0 holds 3 rows, rank 1 the other 7.
        lo, hi = (0, 3) if rank == 0 else (3, 10)
        m = gather_metrics(PROBS[lo:hi], LABELS[lo:hi], float(hi - lo) * 0.5)
        out.put((rank, m))
    finally:
        dist.destroy_process_group()


def test_gather_metrics_across_two_gloo_ranks() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    whole = classification_metrics(PROBS, LABELS, 5.0)
    assert results[0] == pytest.approx(whole)
    assert results[1] == pytest.approx(whole)  # every rank reports the same global metrics
    assert np.isfinite(results[0]["roc_auc"])
