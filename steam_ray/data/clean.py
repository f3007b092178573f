"""Cleaning, labelling, drop reasons and split assignment for one batch (vectorised pyarrow).

Drop reasons, first match wins: ``malformed`` (the CSV row could not be parsed), ``excluded``
(label value in ColumnMap.exclude: not a review at all), ``empty`` (missing/blank text),
``placeholder`` (the whole text is e.g. "Early Access Review", any case), ``bad_label`` (label
neither positive nor negative), then ``duplicate`` (same group and cleaned text as a kept row;
decided later by the dedupe stage). Nothing else is dropped: short, non-English or very long
texts are kept.
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
    n = batch.num_rows
    raw_text = pc.fill_null(_as_str(batch.column(columns.text)), "")
    text = clean_text(raw_text, clean.mask_token)
    raw_label = _label_strings(batch.column(columns.label))

    codes = np.zeros(n, dtype=np.int8)
    # Assigned from the lowest to the highest precedence: later assignments win.
    neg = pc.is_in(raw_label, value_set=pa.array(columns.negative, pa.string()))
    pos = pc.is_in(raw_label, value_set=pa.array(columns.positive, pa.string()))
    good_label = pc.or_(pos, neg).to_numpy(zero_copy_only=False)
    codes[~good_label] = _R_BAD
    placeholders = pa.array([p.strip().lower() for p in clean.placeholders], pa.string())
    is_ph = pc.is_in(pc.utf8_lower(text), value_set=placeholders).to_numpy(zero_copy_only=False)
    codes[is_ph] = _R_PLACEHOLDER
    codes[pc.equal(text, "").to_numpy(zero_copy_only=False)] = _R_EMPTY
    if columns.exclude:
        # Not a review at all (the sample's `plot` rows), whatever its text: counted apart.
        excl = pc.is_in(raw_label, value_set=pa.array(columns.exclude, pa.string()))
        codes[excl.to_numpy(zero_copy_only=False)] = _R_EXCLUDED
    if MALFORMED_COLUMN in batch.column_names:
        bad = pc.is_valid(batch.column(MALFORMED_COLUMN)).to_numpy(zero_copy_only=False)
        codes[bad] = _R_MALFORMED
        raw_text = pc.if_else(pa.array(bad), _as_str(batch.column(MALFORMED_COLUMN)), raw_text)

    label = np.where(pos.to_numpy(zero_copy_only=False), 1, 0).astype(np.int64)
    if columns.group is not None:
        group = pc.utf8_trim_whitespace(pc.fill_null(_as_str(batch.column(columns.group)), ""))
    else:
        # No group column: every distinct text is its own group.
        group = pa.array(
            [format(h, "016x") for h in splitmod.hash64_many(text.to_pylist())], pa.string()
        )
    split_codes = splitmod.assign_splits(
        group,
        text,
        seed=seed,
        split_by=split_by,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    kept = codes == _R_KEPT
    dkey = np.zeros(n, dtype=np.uint64)
    if kept.any():
        idx = np.flatnonzero(kept)
        g_kept = group.take(pa.array(idx)).to_pylist()
        t_kept = text.take(pa.array(idx)).to_pylist()
        dkey[idx] = splitmod.hash64_many(
            f"{g}{splitmod.SEP}{t}" for g, t in zip(g_kept, t_kept, strict=True)
        )
    return pa.Table.from_arrays(
        [
            text,
            pa.array(label),
            group,
            pa.array(SPLIT_NAMES).take(pa.array(split_codes)),
            _REASON_BY_CODE.take(pa.array(codes)),
            pa.array(dkey),
            raw_text,
            raw_label,
        ],
        schema=OUT_SCHEMA,
    )


class Deduper:
    """Exact duplicate detection over the whole run by 64-bit keys of (group, cleaned text).

    Memory ~8 bytes per kept row in a sorted numpy array, plus ~70 bytes per row for the most
    recent (up to ``merge_every``) keys in a Python set before they are merged in. A 64-bit key
    collision (p ~ n²/2⁶⁵, ~1e-6 at 6.4M rows) would drop one row as a duplicate.
    """

    def __init__(self, merge_every: int = 1 << 20) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._merge_every = merge_every

    def _seen_sorted(self, keys: np.ndarray) -> np.ndarray:
        if self._sorted.size == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.searchsorted(self._sorted, keys)
        pos[pos >= self._sorted.size] = 0
        found: np.ndarray = self._sorted[pos] == keys
        return found

    def mark(self, keys: np.ndarray) -> np.ndarray:
        """True for each key already seen (earlier in this call or before); records the rest."""
        dup = self._seen_sorted(keys)
        recent = self._recent
        for i in np.flatnonzero(~dup):
            k = int(keys[i])
            if k in recent:
                dup[i] = True
            else:
                recent.add(k)
        if len(recent) >= self._merge_every:
            self._merge()
        return dup

    def _merge(self) -> None:
        new = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        self._sorted = np.union1d(self._sorted, new)
        self._recent = set()

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._recent)


def apply_dedupe(batch: pa.Table, deduper: Deduper) -> pa.Table:
    """Mark kept rows whose (group, text) key was already kept as ``duplicate``."""
    reason = batch.column("reason")
    kept = pc.equal(reason, KEPT).to_numpy(zero_copy_only=False)
    if not kept.any():
        return batch
    idx = np.flatnonzero(kept)
    keys = batch.column("dkey").to_numpy()[idx]
    dup = deduper.mark(keys)
    if not dup.any():
        return batch
    new_reason = np.array(reason.to_pylist(), dtype=object)
    new_reason[idx[dup]] = "duplicate"
    col = batch.schema.get_field_index("reason")
    return batch.set_column(col, "reason", pa.array(new_reason, pa.string()))
