"""The sampled prediction log a model replica writes (``serve.prediction_log``).

Per logged review: time, token length, unknown-token rate, truncation flag, score, label, model
version and a hash of the text (the text itself only with ``keep_text``): what ``steam-ray
monitor`` compares with the training data. The request path only appends to a bounded buffer;
a background thread writes Parquet files. A full buffer or a failed write drops rows and counts
them; it never blocks or fails a request.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import random
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from steam_ray import storage
from steam_ray.config import PredictionLogSection

log = logging.getLogger("ray.serve")

#: Columns of a prediction log file; ``text`` only when kept.
LOG_COLUMNS = ("time", "num_tokens", "unk_rate", "truncated", "score", "label", "model_version")
SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("ms", tz="UTC")),
        ("num_tokens", pa.int32()),
        ("unk_rate", pa.float64()),
        ("truncated", pa.bool_()),
        ("score", pa.float64()),
        ("label", pa.string()),
        ("model_version", pa.string()),
        ("text_sha256", pa.string()),
    ]
)


def unk_rate(ids: pa.ChunkedArray | pa.Array, unk_id: int | None, specials: int) -> np.ndarray:
    """Share of a review's tokens (specials excluded) that the tokenizer could not name."""
    lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.float64)
    if unk_id is None:
        return np.zeros(lengths.size)
    flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(lengths.size), lengths.astype(np.int64))
    unknown = np.bincount(owner[flat == unk_id], minlength=lengths.size)
    return np.asarray(unknown / np.maximum(lengths - specials, 1.0), dtype=np.float64)


def unk_rule(tokenizer: Any) -> tuple[int | None, int]:
    """``unk_rate``'s (unknown-token id, special tokens per review: [CLS] [SEP] for BERT-likes)."""
    return tokenizer.unk_token_id, len(tokenizer("")["input_ids"])


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class PredictionLog:
    """Bounded buffer + writer thread for one replica. ``on_drop(n)`` counts dropped rows."""

    def __init__(
        self,
        cfg: PredictionLogSection,
        *,
        writer: str,
        tokenizer: Any,
        max_length: int,
        on_drop: Callable[[int], None] = lambda n: None,
        on_write: Callable[[int], None] = lambda n: None,
    ) -> None:
        assert cfg.path, "PredictionLog needs serve.prediction_log.path"
        self.cfg, self.writer, self.max_length = cfg, writer, max_length
        self._unk = unk_rule(tokenizer)
        self.on_drop, self.on_write = on_drop, on_write
        self.dropped = self.written = 0
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._seq = 0
        self._rng = random.Random()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def offer(
        self,
        texts: Sequence[str],
        ids: Sequence[Sequence[int]],
        scores: Sequence[float],
        labels: Sequence[str],
        version: str,
    ) -> None:
        """Sample and buffer rows; never blocks on I/O (called on the scoring thread)."""
        picked = [i for i in range(len(texts)) if self._rng.random() < self.cfg.sample_rate]
        if not picked:
            return
        now = datetime.now(UTC)
        unk = unk_rate(pa.array([ids[i] for i in picked], pa.list_(pa.int32())), *self._unk)
        rows = [
            self._row(now, texts[i], len(ids[i]), float(u), scores[i], labels[i], version)
            for i, u in zip(picked, unk, strict=True)
        ]
        with self._lock:
            room = max(0, self.cfg.max_pending_rows - len(self._rows))
            self._rows.extend(rows[:room])
            full = len(self._rows) >= self.cfg.flush_rows
        if len(rows) > room:
            self._drop(len(rows) - room)
        if full:
            self._wake.set()

    def _row(
        self, now: datetime, text: str, n: int, unk: float, score: float, label: str, version: str
    ) -> dict[str, Any]:
        row = {
            "time": now,
            "num_tokens": n,
            "unk_rate": unk,
            "truncated": n >= self.max_length,  # evaluate's rule: the cut was reached
            "score": float(score),
            "label": label,
            "model_version": version,
            "text_sha256": text_hash(text),
        }
        if self.cfg.keep_text:
            row["text"] = text
        return row

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.on_drop(n)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.cfg.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one Parquet file (safe to call from any thread)."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._seq += 1
            seq = self._seq
        if not rows:
            return
        try:
            self._write(rows, seq)
        except Exception:  # the log must never take the replica down
            log.exception("prediction log: %d rows not written", len(rows))
            self._drop(len(rows))
            return
        self.written += len(rows)
        self.on_write(len(rows))

    def _write(self, rows: list[dict[str, Any]], seq: int) -> None:
        schema = SCHEMA.append(pa.field("text", pa.string())) if self.cfg.keep_text else SCHEMA
        table = pa.Table.from_pylist(rows, schema=schema)
        assert self.cfg.path is not None
        fs, root = storage.resolve(self.cfg.path)
        stamp = rows[0]["time"].strftime("%Y%m%dT%H%M%S")
        name = f"part-{stamp}-{self.writer}-{seq:06d}.parquet"
        fs.create_dir(root, recursive=True)
        # A reader never sees a half-written file: objects appear whole on upload; on a local
        # disk the file is written under a hidden name and renamed.
        target = posixpath.join(root, name)
        tmp = target if storage.is_uri(self.cfg.path) else posixpath.join(root, f".{name}.tmp")
        pq.write_table(table, tmp, filesystem=fs)
        if tmp != target:
            storage.move_at(fs, tmp, target)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and write what is left."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self.flush()
