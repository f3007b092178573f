"""Cleaning, labelling, drop reasons and split assignment for one batch (vectorised pyarrow).

Drop reasons, first match wins: ``malformed`` (the CSV row could not be parsed), ``excluded``
(label value in ColumnMap.exclude: not a review at all), ``empty`` (missing/blank text),
``placeholder`` (the whole text is e.g. "Early Access Review", any case), ``bad_label`` (label
neither positive nor negative), then ``duplicate`` (same group, cleaned text and label as a
kept row; decided later by the dedupe stage). Nothing else is dropped: short, non-English or
very long texts are kept.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from steam_ray.config import DROP_REASONS, CleanConfig, ColumnMap
from steam_ray.data import split as splitmod
from steam_ray.data.csvread import MALFORMED_COLUMN

#: Every reason a row can be dropped for; "" means kept. The manifest lists all of them.
REASONS: tuple[str, ...] = (*DROP_REASONS, "excluded", "malformed")
KEPT = ""
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

#: Columns leaving the cleaning stage.
OUT_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("label", pa.int64()),
        ("group", pa.string()),
        ("split", pa.string()),
        ("reason", pa.string()),
        ("dkey", pa.uint64()),
        ("raw_text", pa.string()),
        ("raw_label", pa.string()),
    ]
)

_R_KEPT, _R_EMPTY, _R_PLACEHOLDER, _R_BAD, _R_EXCLUDED, _R_MALFORMED = range(6)
_REASON_BY_CODE = pa.array(["", "empty", "placeholder", "bad_label", "excluded", "malformed"])


def mask_pattern(mask_char: str = "♥") -> str:
    # A run of masks, also when separated by whitespace ("♥♥♥ ♥♥"), is one mask token.
    c = re.escape(mask_char)
    return rf"{c}(?:[\s\p{{Z}}]*{c})*"


def _as_str(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string(arr.type):
        if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
            arr = arr.cast(pa.string())
        else:
            arr = pc.cast(arr, pa.string())
    return arr


def clean_text(raw: pa.Array, mask_token: str = "♥") -> pa.Array:
    """Collapse runs of Steam's ♥ mask into one ``mask_token``; trim surrounding whitespace."""
    text = pc.fill_null(_as_str(raw), "")
    replacement = mask_token.replace("\\", "\\\\")
    text = pc.replace_substring_regex(text, pattern=mask_pattern("♥"), replacement=replacement)
    return pc.utf8_trim_whitespace(text)


def _label_strings(raw: pa.Array) -> pa.Array:
    arr = _as_str(raw)
    return pc.fill_null(pc.utf8_trim_whitespace(arr), "")


def _is_in(values: pa.Array, allowed: list[str]) -> np.ndarray:
    """Per row: is the value one of ``allowed`` (a numpy bool mask)?"""
    value_set = pa.array(allowed, pa.string())
    found: np.ndarray = pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False)
    return found


def _malformed_rows(batch: pa.Table) -> np.ndarray | None:
    """Rows the CSV reader could not parse (None: the source has no such column)."""
    if MALFORMED_COLUMN not in batch.column_names:
        return None
    bad: np.ndarray = pc.is_valid(batch.column(MALFORMED_COLUMN)).to_numpy(zero_copy_only=False)
    return bad


def _drop_codes(
    text: pa.Array,
    raw_label: pa.Array,
    positive: np.ndarray,
    malformed: np.ndarray | None,
    columns: ColumnMap,
    clean: CleanConfig,
) -> np.ndarray:
    """Each row's drop reason code (_R_KEPT if kept), one whole-batch mask per rule.

    The rules are applied from the lowest precedence to the highest: later assignments win, so
    a row gets the first reason of the module docstring's list that applies to it.
    """
    codes = np.zeros(len(text), dtype=np.int8)
    codes[~(positive | _is_in(raw_label, columns.negative))] = _R_BAD
    placeholders = [p.strip().lower() for p in clean.placeholders]
    codes[_is_in(pc.utf8_lower(text), placeholders)] = _R_PLACEHOLDER
    codes[pc.equal(text, "").to_numpy(zero_copy_only=False)] = _R_EMPTY
    if columns.exclude:
        # Not a review at all (the sample's `plot` rows), whatever its text: counted apart.
        codes[_is_in(raw_label, columns.exclude)] = _R_EXCLUDED
    if malformed is not None:
        codes[malformed] = _R_MALFORMED
    return codes


def _groups(batch: pa.Table, text: pa.Array, columns: ColumnMap) -> pa.Array:
    """The split/dedupe group of each row: the trimmed group column, else a hash of the text."""
    if columns.group is not None:
        return pc.utf8_trim_whitespace(pc.fill_null(_as_str(batch.column(columns.group)), ""))
    # No group column: every distinct text is its own group.
    return pa.array(
        [format(h, "016x") for h in splitmod.hash64_many(text.to_pylist())], pa.string()
    )


def _dedupe_keys(
    group: pa.Array, text: pa.Array, label: np.ndarray, kept: np.ndarray
) -> np.ndarray:
    """The dedupe key of each kept row (0 for dropped rows): a hash of (group, text, label)."""
    dkey = np.zeros(len(kept), dtype=np.uint64)
    if not kept.any():
        return dkey
    idx = np.flatnonzero(kept)
    g_kept = group.take(pa.array(idx)).to_pylist()
    t_kept = text.take(pa.array(idx)).to_pylist()
    l_kept = label[idx].tolist()
    # The label is part of the key: whichever copy a run keeps, the kept row is the same,
    # so the output does not depend on the order blocks reach the dedupe actors.
    dkey[idx] = splitmod.hash64_many(
        f"{g}{splitmod.SEP}{t}{splitmod.SEP}{y}"
        for g, t, y in zip(g_kept, t_kept, l_kept, strict=True)
    )
    return dkey


def _rejected_raw_text(
    batch: pa.Table, raw_text: pa.Array, malformed: np.ndarray | None, kept: np.ndarray
) -> pa.Array:
    """The raw text of each dropped row (for OUTPUT/rejected), null for a kept row.

    A malformed row's raw text is the unparsed CSV record. A kept row has its cleaned text, so
    a second copy need not travel through tokenizing and writing.
    """
    if malformed is not None:
        raw_text = pc.if_else(
            pa.array(malformed), _as_str(batch.column(MALFORMED_COLUMN)), raw_text
        )
    return pc.if_else(pa.array(kept), pa.scalar(None, pa.string()), raw_text)


def classify(
    batch: pa.Table,
    *,
    columns: ColumnMap,
    clean: CleanConfig,
    seed: int,
    split_by: str,
    val_fraction: float,
    test_fraction: float,
) -> pa.Table:
    """Raw source rows -> OUT_SCHEMA rows (text cleaned, label, group, split, drop reason)."""
    raw_text = pc.fill_null(_as_str(batch.column(columns.text)), "")
    text = clean_text(raw_text, clean.mask_token)
    raw_label = _label_strings(batch.column(columns.label))
    positive = _is_in(raw_label, columns.positive)
    malformed = _malformed_rows(batch)
    codes = _drop_codes(text, raw_label, positive, malformed, columns, clean)
    kept = codes == _R_KEPT
    label = np.where(positive, 1, 0).astype(np.int64)
    group = _groups(batch, text, columns)
    split_codes = splitmod.assign_splits(
        group,
        text,
        seed=seed,
        split_by=split_by,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    return pa.Table.from_arrays(
        [
            text,
            pa.array(label),
            group,
            pa.array(SPLIT_NAMES).take(pa.array(split_codes)),
            _REASON_BY_CODE.take(pa.array(codes)),
            pa.array(_dedupe_keys(group, text, label, kept)),
            _rejected_raw_text(batch, raw_text, malformed, kept),
            raw_label,
        ],
        schema=OUT_SCHEMA,
    )


_ANON = (1 << 64) - 1  # the owner recorded for anonymous callers


class Deduper:
    """Exact duplicate detection over the whole run by 64-bit keys of (group, text, label).

    Each key remembers its *owner* (an id of the block that first kept it), so a block sent
    again by a retried task gets the same answer instead of finding its own rows "seen".
    Memory ~16 bytes per key in sorted numpy arrays, plus ~100 bytes per key for the most
    recent (up to ``merge_every``) keys in a dict before they are merged in. A 64-bit key
    collision (p ~ n²/2⁶⁵, ~1e-6 at 6.4M rows) would drop one row as a duplicate.
    """

    def __init__(self, merge_every: int = 1 << 20) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._owners = np.empty(0, dtype=np.uint64)
        self._recent: dict[int, int] = {}
        self._merge_every = merge_every

    def _owner_sorted(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, owner) per key from the merged part."""
        if self._sorted.size == 0:
            return np.zeros(keys.shape, dtype=bool), np.zeros(keys.shape, dtype=np.uint64)
        pos = np.searchsorted(self._sorted, keys)
        pos[pos >= self._sorted.size] = 0
        found: np.ndarray = self._sorted[pos] == keys
        return found, self._owners[pos]

    def mark(self, keys: np.ndarray, owner: int | None = None) -> np.ndarray:
        """True for each key already kept: by another owner, or earlier in this call.

        ``owner`` None: a fresh caller every time (any key seen before is a duplicate).
        """
        anonymous = owner is None
        own = _ANON if owner is None else owner
        dup = np.ones(keys.shape, dtype=bool)
        _, first = np.unique(keys, return_index=True)  # repeats inside the call: duplicates
        uniq = keys[first]
        found, owners = self._owner_sorted(uniq)
        d = found & (anonymous | (owners != np.uint64(own)))
        recent = self._recent
        claimed: list[int] = []
        for j in np.flatnonzero(~found):
            k = int(uniq[j])
            prev = recent.get(k)
            if prev is None:
                claimed.append(k)
                d[j] = False
            else:
                d[j] = anonymous or prev != own
        for k in claimed:
            recent[k] = own
        dup[first] = d
        if len(recent) >= self._merge_every:
            self._merge()
        return dup

    def _merge(self) -> None:
        new = np.fromiter(self._recent.keys(), dtype=np.uint64, count=len(self._recent))
        own = np.fromiter(self._recent.values(), dtype=np.uint64, count=len(self._recent))
        keys = np.concatenate([self._sorted, new])
        order = np.argsort(keys, kind="stable")
        self._sorted = keys[order]
        self._owners = np.concatenate([self._owners, own])[order]
        self._recent = {}

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._recent)


def kept_keys(batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(row index, key) of the kept rows: all a dedupe stage needs to see."""
    kept = pc.equal(batch.column("reason"), KEPT).to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(kept)
    return idx, batch.column("dkey").to_numpy()[idx]


def mark_duplicates(batch: pa.Table, rows: np.ndarray) -> pa.Table:
    """Set ``reason`` to ``duplicate`` for the row indices ``rows``."""
    if rows.size == 0:
        return batch
    reason = np.array(batch.column("reason").to_pylist(), dtype=object)
    reason[rows] = "duplicate"
    col = batch.schema.get_field_index("reason")
    return batch.set_column(col, "reason", pa.array(reason, pa.string()))


def apply_dedupe(batch: pa.Table, deduper: Deduper, owner: int | None = None) -> pa.Table:
    """Mark kept rows whose key was already kept (by another owner) as ``duplicate``."""
    idx, keys = kept_keys(batch)
    if idx.size == 0:
        return batch
    return mark_duplicates(batch, idx[deduper.mark(keys, owner)])
