"""``data prepare``: one streaming Ray Data pass from a raw source to Parquet shards + manifest.

    read (CSV byte ranges / Parquet / JSONL / HF)  -> tasks
    classify: map columns, clean, label, drop reason, split  -> stateless tasks
    dedupe: exact (group, cleaned text) repeats  -> one small actor
    tokenize kept rows  -> actor pool, tokenizer loaded once per actor
    write kept rows per split, dropped rows aside, per-task stats  -> Datasink

Every stage streams block by block, so memory stays flat as the input grows (the dedupe
actor is the only state: ~8 bytes per kept row).

Standalone use::

    from steam_ray.config import DataConfig
    from steam_ray.data.pipeline import prepare
    manifest = prepare(DataConfig(source="steam", input="reviews.csv", output="out/"))

``prepare`` starts a local Ray instance if none is running, or uses the connected cluster.
"""

from __future__ import annotations

import math
import time
import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import ray

import steam_ray
from steam_ray import storage
from steam_ray.config import DataConfig, resolve_model
from steam_ray.data import manifest as mf
from steam_ray.data.clean import REASONS, Deduper, apply_dedupe, classify
from steam_ray.data.sink import KEPT_COLUMNS, KEPT_SCHEMA, PreparedDatasink, WriteStats
from steam_ray.data.sources import check_input, read_source
from steam_ray.data.tokenize import TokenizeBatch, load_tokenizer, tokenizer_json
from steam_ray.errors import DataError, SteamRayError

# Fractional CPUs so read tasks, cleaning tasks, the dedupe actor, the tokenizer actors and
# the writers all fit on a 2-CPU node at once (whole-CPU actors can starve the reads there).
# Read and clean ask for the same CPUs so Ray fuses them into one task per CSV range.
READ_CPUS = 0.5
CLEAN_CPUS = READ_CPUS
DEDUPE_CPUS = 0.1
TOKENIZE_CPUS = 0.5
WRITE_CPUS = 0.25
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


class DedupeActor:
    """Ray Data callable class run as a single actor: sees every kept row once."""

    def __init__(self) -> None:
        self._dedupe = Deduper()
        # Ray Data restarts a dead actor by default; a restarted one has an empty seen-set.
        with warnings.catch_warnings():  # Ray's property reads its own deprecated actor_id
            warnings.simplefilter("ignore", DeprecationWarning)
            self._restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._restarted:
            # Fail loudly rather than let duplicates of rows seen before the crash through.
            raise RuntimeError(
                "the dedupe actor was restarted after a crash and lost the keys it had seen; "
                "re-run `data prepare` (duplicates would otherwise be missed)"
            )
        return apply_dedupe(batch, self._dedupe)


def _classify_batch(batch: pa.Table, **kwargs: Any) -> pa.Table:
    return classify(batch, **kwargs)


def _resolve_input(cfg: DataConfig) -> str:
    if cfg.source == "sample":
        if cfg.input:
            return cfg.input
        from steam_ray.data.sample import sample_csv_path

        return sample_csv_path()
    if not cfg.input:
        raise DataError(f"--input is required for --source {cfg.source}")
    return cfg.input


def _clear_output(output: str) -> None:
    """Remove a previous run's shards so stale parts never mix with this run's."""
    for sub in (*mf.SPLITS, "rejected"):
        path = storage.join(output, sub)
        if storage.exists(path):
            fs, inner = storage.resolve(path)
            fs.delete_dir(inner)
    manifest = mf.manifest_path(output)
    if storage.exists(manifest):
        fs, inner = storage.resolve(manifest)
        fs.delete_file(inner)


def percentiles_from_hist(hist: np.ndarray) -> dict[str, float]:
    """Exact (nearest-rank) percentiles of the values a histogram counts, plus the max."""
    total = int(hist.sum())
    if total == 0:
        return {**dict.fromkeys(PERCENTILES, 0.0), "max": 0.0}
    cum = np.cumsum(hist)
    out = {
        name: float(np.searchsorted(cum, max(1, math.ceil(q * total))))
        for name, q in PERCENTILES.items()
    }
    out["max"] = float(np.flatnonzero(hist)[-1])
    return out


def _find_user_error(exc: BaseException) -> SteamRayError | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        # Ray's wrappers may also subclass the cause's type; prefer the original (its .cause).
        if isinstance(e, SteamRayError) and not isinstance(getattr(e, "cause", None), Exception):
            return e
        stack.extend([e.__cause__, e.__context__, getattr(e, "cause", None)])
    return None


def _ensure_ray() -> None:
    if not ray.is_initialized():
        ray.init(log_to_driver=True)


def _cluster_cpus() -> float:
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return float(resources.get("CPU", 1.0))


def build_dataset(cfg: DataConfig, files: list[str], tokenizer: str) -> ray.data.Dataset:
    """The pipeline up to tokenization; ``tokenizer`` is the fast tokenizer's JSON."""
    # At least ~4 read tasks per CPU (a ~2 GB file still gets csv_chunk_bytes ranges).
    ds = read_source(cfg, files, {"num_cpus": READ_CPUS}, min_ranges=4 * int(_cluster_cpus()))
    if cfg.limit is not None:
        ds = ds.limit(cfg.limit)
    ds = ds.map_batches(
        _classify_batch,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=CLEAN_CPUS,
        fn_kwargs={
            "columns": cfg.resolved_columns(),
            "clean": cfg.clean,
            "seed": cfg.seed,
            "split_by": cfg.split_by,
            "val_fraction": cfg.val_fraction,
            "test_fraction": cfg.test_fraction,
        },
    )
    if cfg.clean.dedupe:
        ds = ds.map_batches(
            DedupeActor,
            batch_format="pyarrow",
            batch_size=None,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=DEDUPE_CPUS,
        )
    # One per cluster CPU: tokenizing is the bulk of the work, and at 0.5 CPU each they leave
    # room for reads and writes (measured: 2 actors ~12% faster than 1 on a 2-core machine).
    actors = cfg.tokenizer_actors or max(1, int(_cluster_cpus()))
    return ds.map_batches(
        TokenizeBatch,
        fn_constructor_kwargs={"tokenizer_json": tokenizer, "max_length": cfg.max_length},
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=TOKENIZE_CPUS,
    )


def prepare(cfg: DataConfig) -> mf.Manifest:
    """Run the whole data stage for ``cfg``; returns (and writes) the manifest."""
    start = time.perf_counter()
    input_path = _resolve_input(cfg)
    files = check_input(cfg, input_path)
    tokenizer_path = resolve_model(cfg.model)
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load tokenizer '{cfg.model}': {exc}") from exc
    _ensure_ray()
    try:
        _clear_output(cfg.output)
        storage.makedirs(cfg.output)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{cfg.output}: cannot write output: {exc}") from exc

    ctx = ray.data.DataContext.get_current()
    saved_order = ctx.execution_options.preserve_order
    saved_deaths = ctx.max_consecutive_actor_init_deaths
    # In read order, the first of a set of duplicates is the one kept, every run.
    ctx.execution_options.preserve_order = True
    # Ray 2.60 sporadically loses an actor before its constructor runs ("all references
    # removed", seen at 1M rows); replace it instead of failing. A broken UDF still fails.
    ctx.max_consecutive_actor_init_deaths = max(saved_deaths, 3)
    try:
        ds = build_dataset(cfg, files, tokenizer_json(tokenizer))
        sink = PreparedDatasink(cfg.output, keep_rejected=cfg.keep_rejected)
        try:
            ds.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
        except Exception as exc:
            user_error = _find_user_error(exc)
            if user_error is None:
                raise
            # A DataError raised inside a Ray task arrives wrapped; surface its one line.
            raise DataError(
                str(user_error.args[0]) if user_error.args else str(user_error)
            ) from exc
    finally:
        ctx.execution_options.preserve_order = saved_order
        ctx.max_consecutive_actor_init_deaths = saved_deaths
    stats = sink.result or WriteStats()
    if stats.rows_kept:
        sink.write_empty_splits(stats)
    elapsed = time.perf_counter() - start

    if stats.rows_read == 0:
        raise DataError(f"{input_path}: no rows read")
    if stats.rows_kept == 0:
        top = ", ".join(f"{r}={c}" for r, c in stats.dropped.items() if c)
        raise DataError(f"{input_path}: no rows left after cleaning ({top})")
    manifest = mf.Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=cfg.source,
        input=input_path,
        rows_read=stats.rows_read,
        rows_kept=stats.rows_kept,
        dropped={r: stats.dropped.get(r, 0) for r in REASONS},
        splits={s: mf.SplitStats(**stats.splits[s]) for s in mf.SPLITS},
        split_by=cfg.split_by,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        tokenizer=tokenizer_path,
        tokenizer_name=cfg.model,
        tokenizer_fingerprint=mf.tokenizer_fingerprint(tokenizer),
        max_length=cfg.max_length,
        token_length_percentiles=percentiles_from_hist(stats.length_hist),
        truncated_rows=stats.truncated_rows,
        fingerprint=stats.fingerprint(),
        columns={f.name: str(f.type) for f in KEPT_SCHEMA},
        elapsed_s=round(elapsed, 3),
        rows_per_s=round(stats.rows_read / elapsed, 1) if elapsed > 0 else 0.0,
        steam_ray_version=steam_ray.__version__,
        column_map=cfg.resolved_columns().model_dump(),
        clean=cfg.clean.model_dump(),
        # Exact dedupe in one actor: memory ~8 bytes per kept row (+~70 per row for the
        # most recent 1M keys); which of a set of duplicates is kept follows read order.
        dedupe="exact, (group, cleaned text) 64-bit keys, one actor, ~8 B/kept row",
        output_columns=list(KEPT_COLUMNS),
        rejected_dir="rejected" if cfg.keep_rejected else None,
        files=len(stats.files),
    )
    mf.write_manifest(cfg.output, manifest)
    return manifest


def print_summary(manifest: mf.Manifest) -> None:
    """The end-of-run summary: throughput, drops by reason, split sizes."""
    print(
        f"read {manifest.rows_read:,} rows, kept {manifest.rows_kept:,} "
        f"in {manifest.elapsed_s:.1f}s ({manifest.rows_per_s:,.0f} rows/s)"
    )
    drops = ", ".join(f"{r}={c:,}" for r, c in manifest.dropped.items())
    print(f"dropped: {drops}")
    for name, s in manifest.splits.items():
        print(
            f"  {name:5s} {s.rows:>10,} rows  positive {s.positive:,}  negative {s.negative:,}"
            f"  tokens {s.tokens:,}"
        )
    pct = ", ".join(f"{k}={v:.0f}" for k, v in manifest.token_length_percentiles.items())
    print(f"tokens/row: {pct}; truncated at {manifest.max_length}: {manifest.truncated_rows:,}")
    print(f"tokenizer: {manifest.tokenizer_name} ({manifest.tokenizer_fingerprint})")
    if isinstance(manifest.input, str):
        print(f"input: {manifest.input}")
