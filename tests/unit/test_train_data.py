"""Collate (dynamic padding) and token-budget bucketing."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from steam_ray.train.data import (
    bucket_batches,
    iter_bucketed,
    make_collate,
    pad_batch,
)


def test_pad_batch_pads_to_longest_with_mask() -> None:
    out = pad_batch([[5, 6, 7], [8], [9, 10]], [1, 0, 1], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert out["labels"].tolist() == [1, 0, 1]
    assert out["input_ids"].dtype == torch.int64


def test_pad_batch_uses_pad_id() -> None:
    out = pad_batch([[1], [2, 3, 4, 5]], [0, 0], pad_id=99)
    assert out["input_ids"][0].tolist() == [1, 99, 99, 99]


def test_collate_accepts_ray_numpy_batches() -> None:
    # Ray Data hands a list<int32> column over as an object array of int32 arrays.
    ids = np.empty(2, dtype=object)
    ids[0] = np.array([101, 7, 102], dtype=np.int32)
    ids[1] = np.array([101, 102], dtype=np.int32)
    out = make_collate(0)({"input_ids": ids, "label": np.array([1, 0])})
    assert out["input_ids"].shape == (2, 3)
    assert out["attention_mask"].sum().item() == 5


@pytest.mark.parametrize("budget", [16, 64, 256, 1000])
def test_bucketing_respects_budget_and_keeps_every_row(budget: int) -> None:
    rng = random.Random(1)
    lengths = [max(1, int(rng.lognormvariate(3.0, 1.0))) % 200 + 1 for _ in range(500)]
    batches = bucket_batches(lengths, budget, random.Random(0))
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(len(lengths)))  # none lost, none duplicated
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) * longest <= budget or len(b) == 1


def test_bucketing_groups_similar_lengths_and_beats_fixed_batches() -> None:
    rng = random.Random(2)
    lengths = [rng.choice([5, 10, 200]) for _ in range(300)]
    batches = bucket_batches(lengths, 400, random.Random(0))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    # Fixed batches of 8 in arrival order: nearly every batch pads to 200.
    fixed = sum(
        len(lengths[i : i + 8]) * max(lengths[i : i + 8]) for i in range(0, len(lengths), 8)
    )
    assert padded < 0.5 * fixed


def test_oversized_row_goes_alone() -> None:
    batches = bucket_batches([3, 500, 4], 64, random.Random(0))
    assert [1] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2]


def test_batch_order_is_shuffled_but_seeded() -> None:
    lengths = list(range(1, 200))
    a = bucket_batches(lengths, 64, random.Random(3))
    b = bucket_batches(lengths, 64, random.Random(3))
    assert a == b
    firsts = [min(lengths[i] for i in batch) for batch in a]
    assert firsts != sorted(firsts)


def test_iter_bucketed_streams_windows() -> None:
    def window(lens: list[int]) -> dict[str, np.ndarray]:
        ids = np.empty(len(lens), dtype=object)
        for i, n in enumerate(lens):
            ids[i] = np.arange(1, n + 1, dtype=np.int32)
        return {"input_ids": ids, "label": np.arange(len(lens)) % 2}

    windows = [window([3, 30, 4, 31]), window([10, 2])]
    out = list(iter_bucketed(windows, token_budget=64, pad_id=0, seed=0))
    assert sum(b["labels"].shape[0] for b in out) == 6
    for b in out:
        assert b["input_ids"].numel() <= 64
    assert sum(int(b["attention_mask"].sum()) for b in out) == 3 + 30 + 4 + 31 + 10 + 2
