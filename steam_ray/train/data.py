"""Batches for training: dynamic padding and length-bucketed (token-budget) batching.

Rows arrive from Ray Data as numpy dicts with ``input_ids`` (an object array of int arrays,
unpadded) and ``label``. Padding is to the longest row of each batch, never to max_length:
on Steam reviews (mostly short, long tail) that alone removes most of the padded compute.
The padding and length-bucketing rule itself is ``steam_ray.batching`` (shared with Serve).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from steam_ray import storage
from steam_ray.batching import length_buckets, pad_rows

Batch = dict[str, torch.Tensor]


def pad_batch(
    seqs: Sequence[Sequence[int]], labels: Sequence[int] | np.ndarray, pad_id: int
) -> Batch:
    """Right-pad token ids to the longest sequence in the batch; mask marks real tokens."""
    ids, mask = pad_rows(seqs, pad_id)
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.array(labels, dtype=np.int64)),  # a copy: writable
    }


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and device.index in (None, t.device.index)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Batch -> device. Fixed-size batches arrive there already (Ray Data's
    ``iter_torch_batches`` moves them to the Train worker's device on its prefetch thread);
    token-budget batches come from the host: on CUDA, pinned memory and a non-blocking copy
    (the host keeps preparing the next batch while this one transfers)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {
        k: v if _on(v, device) else v.pin_memory().to(device, non_blocking=True)
        for k, v in batch.items()
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
    batches = length_buckets(lengths, token_budget)
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


DEFAULT_SHUFFLE_BUFFER_ROWS = 8192


def train_batches(
    shard: Any,
    *,
    batch_size: int,
    token_budget: int | None,
    pad_id: int,
    seed: int,
    window_rows: int = 1024,
    shuffle_buffer_rows: int = DEFAULT_SHUFFLE_BUFFER_ROWS,
) -> Iterator[Batch]:
    """One epoch of training batches from a Ray Data shard (``DataIterator``).

    Rows are drawn at random from a local buffer of ``shuffle_buffer_rows`` rows (at least a
    batch or a window), fed by blocks that ``read_train_split`` reads in a new random file
    order every epoch: together a mix of many games per batch, without a full shuffle.
    ``seed`` should differ per epoch (e.g. base seed + epoch).
    """
    if token_budget is None:
        it: Iterator[Batch] = shard.iter_torch_batches(
            batch_size=batch_size,
            collate_fn=make_collate(pad_id),
            local_shuffle_buffer_size=max(shuffle_buffer_rows, batch_size),
            local_shuffle_seed=seed,
        )
        return it
    windows = shard.iter_batches(
        batch_size=window_rows,
        batch_format="numpy",
        local_shuffle_buffer_size=max(shuffle_buffer_rows, window_rows),
        local_shuffle_seed=seed,
    )
    return iter_bucketed(windows, token_budget, pad_id, seed)


def read_train_split(path: str, columns: list[str], seed: int, num_cpus: float = 1.0) -> Any:
    """The training split, its files in a seeded random order that changes every epoch.

    Ray re-plans the read for each execution (each epoch of a Train worker's shard) and
    ``reseed_after_execution`` mixes the execution index into the seed: a different but
    reproducible file order per epoch. (``randomize_block_order`` would also do it, but it is
    an all-to-all barrier: the whole split in the object store before the first batch.)
    """
    import ray.data
    from ray.data import FileShuffleConfig

    shuffle = FileShuffleConfig(seed=seed, reseed_after_execution=True)
    where, fs = storage.for_ray(path)
    # select_columns is pushed down into the Parquet read (only these columns are read).
    ds = ray.data.read_parquet(where, filesystem=fs, shuffle=shuffle, num_cpus=num_cpus)
    return ds.select_columns(columns)


def read_eval_split(
    path: str, columns: list[str], seed: int, rows: int, cap: int | None, num_cpus: float = 1.0
) -> Any:
    """The validation split; capped by ``max_eval_rows``, a seeded sample over all of it.

    Evaluation stops after ``cap`` rows, so reading files in order would score only the games
    in the first files. A fixed-seed random file order and a seeded row sample of about
    ``cap / rows`` (with headroom, so the cap and not the sample ends the pass) spread it
    over every game.
    """
    import ray.data
    from ray.data import FileShuffleConfig

    shuffle = FileShuffleConfig(seed=seed, reseed_after_execution=False)
    where, fs = storage.for_ray(path)
    ds = ray.data.read_parquet(where, filesystem=fs, shuffle=shuffle, num_cpus=num_cpus)
    ds = ds.select_columns(columns)
    if cap is not None and rows > 0 and cap < rows:
        ds = ds.random_sample(min(1.0, (1.25 * cap + 100) / rows), seed=seed)
    return ds
