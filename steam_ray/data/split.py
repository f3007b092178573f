"""Deterministic train/val/test assignment from a stable hash (never Python's salted hash()).

A row's split depends only on (seed, group) — or (seed, group, text) for ``split_by=random`` — so
it is the same whatever the cluster size, block layout or read order, and a group never spans
two splits under ``split_by=group``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEP = "\x1f"  # unit separator: cannot be confused with ordinary text in a key
_TWO64 = float(2**64)


def hash64(key: str) -> int:
    """A stable unsigned 64-bit hash of ``key`` (blake2b)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def hash64_many(keys: Iterable[str]) -> np.ndarray:
    return np.fromiter((hash64(k) for k in keys), dtype=np.uint64)


def split_of_unit(u: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Map uniform [0, 1) values to split codes 0=train, 1=val, 2=test."""
    codes = np.zeros(u.shape, dtype=np.int8)
    codes[u < test_fraction + val_fraction] = 1
    codes[u < test_fraction] = 2
    return codes


def assign_splits(
    groups: pa.Array,
    texts: pa.Array,
    *,
    seed: int,
    split_by: str,
    val_fraction: float,
    test_fraction: float,
) -> np.ndarray:
    """Split codes (0 train, 1 val, 2 test) for each row."""
    if split_by == "group":
        # Hash each distinct group once per batch.
        enc = (
            pc.dictionary_encode(groups).combine_chunks()
            if isinstance(groups, pa.ChunkedArray)
            else pc.dictionary_encode(groups)
        )
        uniq = enc.dictionary.to_pylist()
        h = hash64_many(f"{seed}{SEP}{g}" for g in uniq)
        per_row = h[enc.indices.to_numpy(zero_copy_only=False)]
    else:
        per_row = hash64_many(
            f"{seed}{SEP}{g}{SEP}{t}"
            for g, t in zip(groups.to_pylist(), texts.to_pylist(), strict=True)
        )
    u = per_row.astype(np.float64) / _TWO64
    return split_of_unit(u, val_fraction, test_fraction)
