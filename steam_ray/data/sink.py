"""A Ray Data Datasink that writes kept rows per split and dropped rows aside, and returns the
per-task statistics the manifest is built from (so no second pass over the output)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink

from steam_ray import storage
from steam_ray.data.clean import KEPT, REASONS, SPLIT_NAMES

_MASK64 = (1 << 64) - 1
KEPT_COLUMNS = ("text", "label", "group", "input_ids", "num_tokens")
KEPT_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("label", pa.int64()),
        ("group", pa.string()),
        ("input_ids", pa.list_(pa.int32())),
        ("num_tokens", pa.int32()),
    ]
)
REJECTED_COLUMNS = ("reason", "raw_text", "raw_label", "group")


@dataclass
class WriteStats:
    """Counts one write task produced; ``merge`` adds them up (all order-independent)."""

    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    splits: dict[str, dict[str, int]] = field(
        default_factory=lambda: {
            s: {"rows": 0, "positive": 0, "negative": 0, "tokens": 0} for s in SPLIT_NAMES
        }
    )
    length_hist: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    truncated_rows: int = 0
    fingerprint_sum: int = 0
    fingerprint_xor: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def rows_kept(self) -> int:
        return sum(s["rows"] for s in self.splits.values())

    @property
    def rows_read(self) -> int:
        return self.rows_kept + sum(self.dropped.values())

    def merge(self, other: WriteStats) -> None:
        for r, c in other.dropped.items():
            self.dropped[r] = self.dropped.get(r, 0) + c
        for s, d in other.splits.items():
            for k, v in d.items():
                self.splits[s][k] += v
        self.length_hist = _add_hist(self.length_hist, other.length_hist)
        self.truncated_rows += other.truncated_rows
        self.fingerprint_sum = (self.fingerprint_sum + other.fingerprint_sum) & _MASK64
        self.fingerprint_xor ^= other.fingerprint_xor
        self.files.extend(other.files)

    def fingerprint(self) -> str:
        return f"{self.fingerprint_sum:016x}{self.fingerprint_xor:016x}"


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def row_hashes(table: pa.Table, split: str) -> np.ndarray:
    """Per-row hashes of (split, label, group, text) for the content fingerprint.

    ``dkey`` already is a blake2b hash of (group, cleaned text); mixing in label and split
    vectorised avoids a second per-row Python hash.
    """
    dkey = table.column("dkey").to_numpy().astype(np.uint64)
    label = table.column("label").to_numpy().astype(np.uint64)
    code = np.uint64(SPLIT_NAMES.index(split) + 1)
    return _mix64(dkey ^ _mix64((label + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15) + code))


def stats_for(table: pa.Table) -> tuple[WriteStats, dict[str, pa.Table], pa.Table]:
    """Stats for one table of pipeline rows, plus its kept rows per split and dropped rows."""
    st = WriteStats()
    reason = table.column("reason")
    kept_mask = pc.equal(reason, KEPT)
    dropped = table.filter(pc.invert(kept_mask))
    if dropped.num_rows:
        for r, c in zip(
            *np.unique(dropped.column("reason").to_numpy(zero_copy_only=False), return_counts=True),
            strict=True,
        ):
            st.dropped[str(r)] = st.dropped.get(str(r), 0) + int(c)
    kept = table.filter(kept_mask)
    per_split: dict[str, pa.Table] = {}
    for s in SPLIT_NAMES:
        part = kept.filter(pc.equal(kept.column("split"), s))
        if part.num_rows == 0:
            continue
        per_split[s] = part
        labels = part.column("label").to_numpy()
        lengths = part.column("num_tokens").to_numpy(zero_copy_only=False).astype(np.int64)
        pos = int(labels.sum())
        st.splits[s] = {
            "rows": part.num_rows,
            "positive": pos,
            "negative": part.num_rows - pos,
            "tokens": int(lengths.sum()),
        }
        st.length_hist = _add_hist(st.length_hist, np.bincount(lengths))
        st.truncated_rows += int(pc.sum(part.column("truncated")).as_py() or 0)
        h = row_hashes(part, s)
        st.fingerprint_sum = (st.fingerprint_sum + int(h.sum(dtype=np.uint64))) & _MASK64
        st.fingerprint_xor ^= int(np.bitwise_xor.reduce(h)) if h.size else 0
    return st, per_split, dropped


def shuffled(table: pa.Table, split: str, seed: int) -> tuple[pa.Table, int]:
    """``table``'s rows in a seeded pseudo-random order (by row hash), and a key for the file.

    Rows of one game arrive together from a file sorted by game; in hash order, any slice of
    a written file (a Ray block, a row group) mixes all the games the file holds.
    """
    h = _mix64(row_hashes(table, split) ^ _mix64(np.full(1, seed, dtype=np.uint64)))
    order = np.argsort(h, kind="stable")
    return table.take(pa.array(order)), int(h[order[0]]) if h.size else 0


def content_key(tables: list[pa.Table]) -> str:
    """A short hash of the tables' rows (Arrow IPC bytes): the same rows, the same key."""
    digest = hashlib.blake2b(digest_size=8)
    for table in tables:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue())
    return digest.hexdigest()


def _add_hist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(a.size, b.size), dtype=np.int64)
    out[: a.size] += a
    out[: b.size] += b
    return out


class PreparedDatasink(Datasink["WriteStats"]):
    """Writes OUTPUT/{train,val,test}/part-*.parquet and OUTPUT/rejected/part-*.parquet."""

    def __init__(
        self,
        output: str,
        keep_rejected: bool = True,
        seed: int = 0,
        min_rows_per_write: int | None = None,
        exit_after_files: int | None = None,
    ) -> None:
        self.output = output
        self.keep_rejected = keep_rejected
        self.seed = seed
        self._min_rows = min_rows_per_write
        # Fault hook for tests (``data.fault_exit_after_files``): the task's process dies.
        self.exit_after_files = exit_after_files
        self.result: WriteStats | None = None

    @property
    def min_rows_per_write(self) -> int | None:
        # Ray Data bundles blocks until a write task has this many rows: one file per split
        # per ~this many input rows, not one per block.
        return self._min_rows

    def get_name(self) -> str:
        return "PreparedParquet"

    def write(self, blocks: Iterable[Any], ctx: Any) -> WriteStats:
        total = WriteStats()
        kept: dict[str, list[pa.Table]] = {s: [] for s in SPLIT_NAMES}
        rejected: list[pa.Table] = []
        for block in blocks:
            table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            if table.num_rows == 0:
                continue
            st, per_split, dropped = stats_for(table)
            total.merge(st)
            for s, part in per_split.items():
                kept[s].append(part)
            if self.keep_rejected and dropped.num_rows:
                rejected.append(dropped.select(list(REJECTED_COLUMNS)))
        # One file per split per write task, named by the task and its rows' content: Ray
        # retries a failed write task with the same index and blocks, and the retry then
        # overwrites what the failed attempt wrote instead of leaving orphans beside it.
        task = getattr(ctx, "task_idx", 0)
        for s, parts in kept.items():
            if parts:
                table, key = shuffled(pa.concat_tables(parts), s, self.seed)
                table = table.select(list(KEPT_COLUMNS)).cast(KEPT_SCHEMA)
                # Led by a hash of the rows, so listing order is not input order either.
                name = f"part-{key:016x}-{task:05d}.parquet"
                self._write_file(total, storage.join(self.output, s, name), [table], task)
        if rejected:
            name = f"part-{task:05d}-{content_key(rejected)}.parquet"
            self._write_file(total, storage.join(self.output, "rejected", name), rejected, task)
        return total

    def _write_file(self, total: WriteStats, path: str, parts: list[pa.Table], task: int) -> None:
        total.files.append(self._write(path, parts))
        if self.exit_after_files is not None and len(total.files) >= self.exit_after_files:
            # Beside the (staging) output, which the swap removes: tests look for it.
            marker = storage.join(f"{self.output.rstrip('/')}.faults", f"task{task:05d}")
            if not storage.exists(marker):  # once per task: its retry runs to the end
                storage.write_text(marker, f"{path}\n")
                os._exit(1)  # a real process death between two files of one task

    def write_empty_splits(self, stats: WriteStats) -> None:
        """A split with no rows still gets a (zero-row) file, so readers find its schema."""
        for s in SPLIT_NAMES:
            if stats.splits[s]["rows"] == 0:
                path = storage.join(self.output, s, "part-empty.parquet")
                stats.files.append(self._write(path, [KEPT_SCHEMA.empty_table()]))

    @staticmethod
    def _write(path: str, parts: list[pa.Table]) -> str:
        fs, inner = storage.resolve(path)
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        pq.write_table(pa.concat_tables(parts), inner, filesystem=fs, compression="zstd")
        return path

    def on_write_complete(self, write_result: Any) -> None:
        total = WriteStats()
        for st in write_result.write_returns:
            if st is not None:
                total.merge(st)
        self.result = total
