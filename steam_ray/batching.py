"""Length bucketing and dynamic padding of token-id rows: one rule for training and serving.

Rows are sorted by length and cut into groups whose padded size (rows x longest row) stays
within a token budget; each group is right-padded to its own longest row, never to
max_length. numpy only (no Ray, no torch): the Serve backends use it as well as training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_buckets(
    lengths: Sequence[int], token_budget: int, *, min_width: int = 1
) -> list[list[int]]:
    """Row indices sorted by length, cut so each group's padded size is <= ``token_budget``.

    A group's padded width is its longest row, counted as at least ``min_width`` (training
    counts an empty row as one token wide, inference as zero). A single row wider than the
    budget goes alone (it cannot be split). Every index appears exactly once, in ascending
    length order (stable for equal lengths).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so the group's padded width is this row's.
        width = max(lengths[i], min_width)
        if current and (len(current) + 1) * width > token_budget:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def pad_rows(
    seqs: Sequence[Sequence[int]], pad_id: int, *, min_width: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), int64 of shape (rows, longest row or ``min_width``): token ids
    right-padded with ``pad_id``; the mask is 1 on real tokens."""
    width = max(max((len(s) for s in seqs), default=0), min_width)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
    return ids, mask
