"""``steam-ray monitor``: does a window of traffic still look like what the model was trained on?

reference: a prepared data dir (its val split) or a registry NAME:VERSION (the data it was
           trained on), scored with the model -> token lengths, unknown-token rates, scores,
           labels (for the calibration behind the accuracy estimate), texts
current:   a prediction log (``serve.prediction_log``), a ``steam-ray predict`` output, or a
           prepared dataset (its ``--split``)
checks:    steam_ray.drift (PSI + KS/Wasserstein, two-proportion test, domain classifier,
           expected accuracy); thresholds from MonitorConfig
output:    drift.json (``drift_detected`` first, then each check) + report.html with PNGs,
           written aside and swapped in
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from steam_ray import drift, storage
from steam_ray.config import MonitorConfig
from steam_ray.data import manifest as mf
from steam_ray.errors import ConfigError, DataError
from steam_ray.serve.prediction_log import LOG_COLUMNS, unk_rate, unk_rule
from steam_ray.serve.source import ModelSource, resolve_source

#: Columns a ``steam-ray predict`` output adds to the input's.
PREDICT_COLUMNS = ("score", "label", "model_version")


@dataclass
class Window:
    """One side of the comparison, as arrays (one entry per review)."""

    name: str
    num_tokens: np.ndarray
    unk_rate: np.ndarray
    scores: np.ndarray
    texts: list[str] | None = None
    times: np.ndarray | None = None  # datetime64[s]
    labels: np.ndarray | None = None  # true labels: the reference only

    @property
    def rows(self) -> int:
        return int(self.scores.size)


def _say(start: float, message: str) -> None:
    print(f"monitor [{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- reading windows -------------------------------------------------------------------------
def _is_traffic(rel: str) -> bool:
    """A Parquet file of a window, by its path under the window's dir: not a predict run's
    rejected/ rows, not hidden or staging entries."""
    dirs = rel.strip("/").split("/")[:-1]
    return rel.endswith(".parquet") and not any(d == "rejected" or d[:1] in "._" for d in dirs)


def _parquet_files(fs: pafs.FileSystem, inner: str) -> list[str]:
    if fs.get_file_info(inner).type == pafs.FileType.File:
        return [inner]
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.is_file and _is_traffic(i.path[len(inner) :]))


def _read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    fs, inner = storage.resolve(path)
    files = _parquet_files(fs, inner)
    if not files:
        return pa.table({})
    return pads.dataset(files, filesystem=fs, format="parquet").to_table(columns=columns)


class Tokens:
    """The model's tokenizer: lengths and unknown-token rates of texts or of prepared ids."""

    def __init__(self, checkpoint: str, max_length: int) -> None:
        from transformers import AutoTokenizer

        from steam_ray.serve.source import materialize

        self.tok = AutoTokenizer.from_pretrained(materialize(checkpoint))
        self.max_length = max_length
        self._unk = unk_rule(self.tok)

    def of_ids(self, ids: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        return lengths, unk_rate(ids, *self._unk)

    def of_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tok(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return self.of_ids(pa.chunked_array([pa.array(enc, pa.list_(pa.int32()))]))


def _score_prepared(cfg: MonitorConfig, data: str, split: str, source: ModelSource) -> pa.Table:
    """(label, text, input_ids, score) of one prepared split, scored on Ray Data."""
    import ray

    from steam_ray import cluster
    from steam_ray.predict import score_dataset

    cluster.connect()
    where, fs = storage.for_ray(mf.split_dir(data, split))
    ds = ray.data.read_parquet(where, filesystem=fs).select_columns(["label", "text", "input_ids"])
    scored = score_dataset(ds, source.path, backend=cfg.backend, concurrency=cfg.actors)
    parts = list(scored.iter_batches(batch_format="pyarrow", batch_size=None))
    if not parts:
        raise DataError(f"{mf.split_dir(data, split)}: the {split} split has no rows")
    return pa.concat_tables(parts)


def prepared_window(
    cfg: MonitorConfig, data: str, split: str, source: ModelSource, name: str
) -> Window:
    manifest = mf.read_manifest(data)
    table = _score_prepared(cfg, data, split, source)
    lengths, unk = Tokens(source.path, manifest.max_length).of_ids(table.column("input_ids"))
    return Window(
        name=name,
        num_tokens=lengths,
        unk_rate=unk,
        scores=table.column("score").to_numpy(zero_copy_only=False),
        texts=table.column("text").to_pylist(),
        labels=table.column("label").to_numpy(zero_copy_only=False),
    )


def reference_window(cfg: MonitorConfig, data: str, source: ModelSource) -> Window:
    """The reference's val split, scored; cached per (data, weights, backend, max length): it
    does not change between runs, and rescoring it each time would dominate a daily run."""
    from steam_ray.serve.backends import weights_fingerprint
    from steam_ray.serve.source import materialize

    name = f"dataset {data} (val)"
    if not cfg.cache_reference:
        return prepared_window(cfg, data, "val", source, name)
    manifest = mf.read_manifest(data)
    parts = [manifest.fingerprint, weights_fingerprint(materialize(source.path)), cfg.backend]
    key = hashlib.sha256(json.dumps([*parts, manifest.max_length]).encode()).hexdigest()[:20]
    root = Path(cfg.cache_dir or Path.home() / ".cache" / "steam_ray" / "monitor")
    path = root / f"reference-{key}.parquet"
    if path.is_file():
        return _window_of(pq.read_table(path), name)
    window = prepared_window(cfg, data, "val", source, name)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{path.name}.{os.getpid()}.tmp"  # a reader never sees half a file
    pq.write_table(_table_of(window), tmp)
    tmp.replace(path)
    return window


def _table_of(w: Window) -> pa.Table:
    return pa.table(
        {
            "num_tokens": w.num_tokens,
            "unk_rate": w.unk_rate,
            "score": w.scores,
            "text": w.texts,
            "label": w.labels,
        }
    )


def _window_of(table: pa.Table, name: str) -> Window:
    def col(c: str) -> np.ndarray:
        return np.asarray(table.column(c).to_numpy(zero_copy_only=False))

    return Window(
        name=name,
        num_tokens=col("num_tokens"),
        unk_rate=col("unk_rate"),
        scores=col("score"),
        texts=table.column("text").to_pylist(),
        labels=col("label"),
    )


UTC_SECONDS = pa.timestamp("s", tz="UTC")


def _since(table: pa.Table, since: datetime | None) -> pa.Table:
    if since is None or "time" not in table.column_names:
        return table
    bound = since if since.tzinfo else since.replace(tzinfo=UTC)
    times = _utc_seconds(table.column("time"))
    return table.filter(pc.greater_equal(times, pa.scalar(bound, UTC_SECONDS)))


def _utc_seconds(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """Log times to whole UTC seconds (a time without a zone is read as UTC)."""
    return pc.cast(times, UTC_SECONDS, safe=False)


def log_window(cfg: MonitorConfig, path: str) -> Window:
    table = _since(_read_parquet(path), cfg.since)
    missing = [c for c in LOG_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: not a prediction log (no {missing} columns)")
    texts = table.column("text").to_pylist() if "text" in table.column_names else None
    return Window(
        name=f"prediction log {path}",
        num_tokens=table.column("num_tokens").to_numpy(zero_copy_only=False),
        unk_rate=table.column("unk_rate").to_numpy(zero_copy_only=False),
        scores=table.column("score").to_numpy(zero_copy_only=False),
        texts=texts,
        times=_utc_seconds(table.column("time")).to_numpy(zero_copy_only=False),
    )


def predictions_window(cfg: MonitorConfig, path: str, source: ModelSource) -> Window:
    """A ``steam-ray predict`` output: a scored batch is a window of traffic too."""
    table = _read_parquet(path)
    if cfg.text_column not in table.column_names:
        raise DataError(f"{path}: no {cfg.text_column!r} column (pass --text-column)")
    texts = [t if isinstance(t, str) else "" for t in table.column(cfg.text_column).to_pylist()]
    lengths, unk = Tokens(source.path, cfg.max_length).of_texts(texts)
    return Window(
        name=f"predictions {path}",
        num_tokens=lengths,
        unk_rate=unk,
        scores=table.column("score").to_numpy(zero_copy_only=False),
        texts=texts,
    )


def _kind(path: str) -> str:
    if storage.exists(mf.manifest_path(path)):
        return "dataset"
    fs, inner = storage.resolve(path)
    files = _parquet_files(fs, inner)
    names = pads.dataset(files[:1], filesystem=fs, format="parquet").schema.names if files else []
    if all(c in names for c in LOG_COLUMNS):
        return "log"
    if all(c in names for c in PREDICT_COLUMNS):
        return "predictions"
    raise ConfigError(
        f"--current {path}: not a prepared dataset (no manifest.json), a prediction log or a "
        "`steam-ray predict` output (no Parquet files with score/label/model_version)"
    )


def current_window(cfg: MonitorConfig, source: ModelSource, kind: str) -> Window:
    assert cfg.current is not None
    if kind == "dataset":
        name = f"dataset {cfg.current} ({cfg.split})"
        return prepared_window(cfg, cfg.current, cfg.split, source, name)
    if kind == "log":
        return log_window(cfg, cfg.current)
    return predictions_window(cfg, cfg.current, source)


def reference_source(cfg: MonitorConfig) -> tuple[str, ModelSource]:
    """(reference data dir, the model): a registry version brings the data it was trained on."""
    if cfg.reference is None:
        raise ConfigError("no reference: pass --reference DATA_DIR|NAME:VERSION")
    if storage.exists(mf.manifest_path(cfg.reference)):
        return cfg.reference, resolve_source(cfg.checkpoint or "best", cfg.registry)
    source = resolve_source(cfg.reference, cfg.registry)
    data = source.lineage.get("data")
    if not data or not storage.exists(mf.manifest_path(str(data))):
        raise ConfigError(
            f"--reference {cfg.reference}: its lineage names no prepared data dir "
            f"({data!r}); pass the data dir it was trained on"
        )
    return str(data), source


# -- checks ----------------------------------------------------------------------------------
def checks(cfg: MonitorConfig, ref: Window, cur: Window, threshold: float) -> list[drift.Check]:
    found = [
        drift.distribution_check(
            "token_length", ref.num_tokens, cur.num_tokens, cfg.psi_threshold, cfg.alpha
        ),
        drift.distribution_check(
            "unknown_token_rate", ref.unk_rate, cur.unk_rate, cfg.psi_threshold, cfg.alpha
        ),
        drift.distribution_check("score", ref.scores, cur.scores, cfg.psi_threshold, cfg.alpha),
        drift.rate_check(ref.scores >= threshold, cur.scores >= threshold, cfg.alpha),
    ]
    if ref.texts is not None and cur.texts is not None:
        found.append(
            drift.domain_check(ref.texts, cur.texts, cfg.domain_auc_threshold, cfg.max_texts, 0)
        )
    assert ref.labels is not None
    est = drift.expected_accuracy(ref.scores, ref.labels, cur.scores, threshold)
    drop = est["reference_accuracy"] - est["current_expected_accuracy"]
    found.append(
        drift.Check(
            "expected_accuracy_drop", drop, cfg.accuracy_drop, drop > cfg.accuracy_drop, est
        )
    )
    return found


def _verdict(
    found: list[drift.Check], cfg: MonitorConfig, ref: Window, cur: Window
) -> dict[str, Any]:
    return {
        "drift_detected": any(c.drift for c in found),
        "drifted": [c.name for c in found if c.drift],
        "reference": {"name": ref.name, "rows": ref.rows},
        "current": {"name": cur.name, "rows": cur.rows},
        "since": cfg.since.isoformat() if cfg.since else None,
        "checks": {c.name: c.as_dict() for c in found},
    }


def monitor(cfg: MonitorConfig) -> dict[str, Any]:
    from steam_ray.monitor_report import write_outputs

    start = time.perf_counter()
    if cfg.current is None:
        raise ConfigError("no current window: pass --current LOG_DIR|PREDICTIONS_DIR|DATASET")
    kind = _kind(cfg.current)  # a wrong --current fails before any scoring
    data, source = reference_source(cfg)
    _say(start, f"reference: {data} (val), model {source.path}")
    ref = reference_window(cfg, data, source)
    _say(start, f"reference: {ref.rows:,} reviews; reading the {kind} {cfg.current}")
    cur = current_window(cfg, source, kind)
    if cur.rows < cfg.min_rows:
        raise DataError(f"{cfg.current}: {cur.rows} reviews in the window, need {cfg.min_rows}")
    _say(start, f"current: {cur.rows:,} reviews; running the checks")
    result = _verdict(checks(cfg, ref, cur, source.threshold), cfg, ref, cur)
    result["threshold"] = source.threshold
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    paths = write_outputs(cfg.output, result, ref, cur, source.threshold)
    _say(start, f"drift_detected={result['drift_detected']} {result['drifted']}; {paths['report']}")
    return {**{k: result[k] for k in ("drift_detected", "drifted")}, **paths}
