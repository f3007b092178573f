"""Batches for training: dynamic padding and length-bucketed (token-budget) batching.

Rows arrive from Ray Data as numpy dicts with ``input_ids`` (an object array of int arrays,
unpadded) and ``label``. Padding is to the longest row of each batch, never to max_length:
on Steam reviews (mostly short, long tail) that alone removes most of the padded compute.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

Batch = dict[str, torch.Tensor]


def pad_batch(
    seqs: Sequence[Sequence[int]], labels: Sequence[int] | np.ndarray, pad_id: int
) -> Batch:
    """Right-pad token ids to the longest sequence in the batch; mask marks real tokens."""
    n = len(seqs)
    width = max((len(s) for s in seqs), default=0) or 1
    ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.array(labels, dtype=np.int64)),  # a copy: writable
    }


class PadCollate(NumpyBatchCollateFn):
    """The ``collate_fn`` for ``iter_torch_batches``: numpy dict in, padded tensors out.

    A ``NumpyBatchCollateFn`` subclass: Ray Data deprecated plain functions as collate_fn.
    """

    def __init__(self, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id

    def __call__(self, batch: dict[str, np.ndarray]) -> Batch:  # type: ignore[override]
        return pad_batch(list(batch["input_ids"]), batch["label"], self.pad_id)


def make_collate(pad_id: int) -> PadCollate:
    return PadCollate(pad_id)


def bucket_batches(
    lengths: Sequence[int], token_budget: int, rng: random.Random | None = None
) -> list[list[int]]:
    """Group row indices into batches whose padded size (rows * longest) is <= token_budget.

    Rows are sorted by length so each batch holds similar lengths (little padding); the batch
    order is then shuffled so training does not see short-to-long curricula. A single row
    longer than the budget goes alone (it cannot be split). Every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i], 1)
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current, width = [], max(lengths[i], 1)
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    (rng or random.Random(0)).shuffle(batches)
    return batches


def iter_bucketed(
    windows: Iterable[dict[str, np.ndarray]], token_budget: int, pad_id: int, seed: int
) -> Iterator[Batch]:
    """Token-budget batches from a stream of row windows (e.g. ``shard.iter_batches``).

    Bucketing happens inside each window, so memory stays bounded and the stream is never
    materialized; larger windows give tighter buckets.
    """
    rng = random.Random(seed)
    for window in windows:
        seqs = list(window["input_ids"])
        labels = np.asarray(window["label"])
        for idx in bucket_batches([len(s) for s in seqs], token_budget, rng):
            yield pad_batch([seqs[i] for i in idx], labels[idx], pad_id)


def train_batches(
    shard: Any,
    *,
    batch_size: int,
    token_budget: int | None,
    pad_id: int,
    seed: int,
    window_rows: int = 1024,
) -> Iterator[Batch]:
    """One epoch of training batches from a Ray Data shard (``DataIterator``)."""
    if token_budget is None:
        it: Iterator[Batch] = shard.iter_torch_batches(
            batch_size=batch_size,
            collate_fn=make_collate(pad_id),
            local_shuffle_buffer_size=batch_size * 8,
            local_shuffle_seed=seed,
        )
        return it
    windows = shard.iter_batches(
        batch_size=window_rows,
        batch_format="numpy",
        local_shuffle_buffer_size=window_rows,
        local_shuffle_seed=seed,
    )
    return iter_bucketed(windows, token_budget, pad_id, seed)
