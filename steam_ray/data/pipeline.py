"""``data prepare``: one streaming Ray Data pass from a raw source to Parquet shards + manifest.

    read (CSV byte ranges in a seeded random order / Parquet / JSONL / HF)  -> tasks
    classify: map columns, clean, label, drop reason, split  -> stateless tasks
      dedupe: each task sends only its kept rows' 64-bit keys to N key-partitioned actors
    tokenize kept rows  -> actor pool, tokenizer loaded once per actor
    write kept rows per split (>= min_rows_per_write rows in, rows in a seeded hash order),
      dropped rows aside, per-task stats  -> Datasink, into a staging dir beside the output
    swap the staging dir's splits + manifest in; the previous output survives any failure

Every stage streams block by block and Ray Data's object store use is capped, so memory
stays flat as the input grows (the dedupe actors are the only state: ~16 bytes per kept row).

Standalone use::

    from steam_ray.config import DataConfig
    from steam_ray.data.pipeline import prepare
    manifest = prepare(DataConfig(source="steam", input="reviews.csv", output="out/"))

``prepare`` starts a local Ray instance if none is running, or uses the connected cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray

import steam_ray
from steam_ray import cluster, storage
from steam_ray.config import DataConfig, resolve_model
from steam_ray.data import manifest as mf
from steam_ray.data.clean import REASONS, Deduper, classify, kept_keys, mark_duplicates
from steam_ray.data.sink import KEPT_COLUMNS, KEPT_SCHEMA, PreparedDatasink, WriteStats
from steam_ray.data.sources import check_input, read_source
from steam_ray.data.tokenize import TokenizeBatch, load_tokenizer, tokenizer_json
from steam_ray.errors import DataError, SteamRayError

# Fractional CPUs so read tasks, cleaning tasks, the dedupe actors, the tokenizer actors and
# the writers all fit on a 2-CPU node at once (whole-CPU actors can starve the reads there).
# Read and clean ask for the same CPUs so Ray fuses them into one task per CSV range; the
# tokenizers ask for a different amount, or Ray would fuse cleaning into them instead.
READ_CPUS = 0.5
CLEAN_CPUS = READ_CPUS
DEDUPE_CPUS = 0.1
TOKENIZE_CPUS = 0.45
WRITE_CPUS = 0.25
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


class DedupeShard:
    """One key partition of the dedupe state: keys with ``key % N == i`` go to actor i.

    Run as a plain Ray actor with no restarts: a restarted one would have lost the keys it
    had seen, so its death fails the run (with the message in ``_dedupe``) instead.
    """

    def __init__(self) -> None:
        self._dedupe = Deduper()

    def mark(self, keys: np.ndarray, owner: int) -> np.ndarray:
        return self._dedupe.mark(keys, owner)

    def size(self) -> int:
        return len(self._dedupe)


def block_owner(keys: np.ndarray) -> int:
    """The id a block claims its keys with: the same block retried gets the same id."""
    digest = hashlib.blake2b(keys.tobytes(), digest_size=8, person=b"steamray-owner").digest()
    return int.from_bytes(digest, "little") >> 1  # below Deduper's anonymous owner


def dedupe_with_actors(batch: pa.Table, actors: list[Any]) -> pa.Table:
    """Mark duplicates in ``batch``: only the kept rows' keys travel, each to its partition."""
    idx, keys = kept_keys(batch)
    if idx.size == 0:
        return batch
    owner = block_owner(keys)
    part = keys % np.uint64(len(actors))
    pending = []
    for i, actor in enumerate(actors):
        sel = np.flatnonzero(part == np.uint64(i))
        if sel.size:
            pending.append((sel, actor.mark.remote(keys[sel], owner)))
    dup = np.zeros(idx.size, dtype=bool)
    try:
        for sel, ref in pending:
            dup[sel] = ray.get(ref)
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(
            "a dedupe actor died and lost the keys it had seen; re-run `data prepare` "
            "(duplicates would otherwise be missed)"
        ) from exc
    return mark_duplicates(batch, idx[dup])


def _classify_batch(batch: pa.Table, **kwargs: Any) -> pa.Table:
    dedupers: list[Any] | None = kwargs.pop("dedupers", None)
    out = classify(batch, **kwargs)
    return dedupe_with_actors(out, dedupers) if dedupers else out


def _resolve_input(cfg: DataConfig) -> str:
    if cfg.source == "sample":
        if cfg.input:
            return cfg.input
        from steam_ray.data.sample import sample_csv_path

        return sample_csv_path()
    if not cfg.input:
        raise DataError(f"--input is required for --source {cfg.source}")
    return cfg.input


# One copy of the move/delete/staging rules, in storage (evaluate and predict use them too).
_move = storage.move_at
_delete = storage.delete_at
staging_dir = storage.staging_dir


def swap_in(fs: pafs.FileSystem, staging: str, output: str) -> None:
    """Replace ``output``'s splits, rejected rows and manifest with ``staging``'s.

    The old manifest leaves first and the new one arrives last, so a reader never sees a
    manifest next to a mix of old and new shards. Old entries wait in ``OUTPUT.old-*`` until
    the new ones are in place (a crash mid-swap leaves them there, not lost).
    """
    fs.create_dir(output, recursive=True)
    aside = f"{output.rstrip('/')}.old-{uuid.uuid4().hex[:8]}"
    order = (mf.MANIFEST_NAME, *mf.SPLITS, "rejected")
    moved = False
    for name in order:
        src = f"{output}/{name}"
        if fs.get_file_info(src).type != pafs.FileType.NotFound:
            if not moved:
                fs.create_dir(aside, recursive=True)
                moved = True
            _move(fs, src, f"{aside}/{name}")
    for name in (*order[1:], order[0]):
        src = f"{staging}/{name}"
        if fs.get_file_info(src).type != pafs.FileType.NotFound:
            _move(fs, src, f"{output}/{name}")
    if moved:
        fs.delete_dir(aside)
    _delete(fs, staging)


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
    cluster.connect(log_to_driver=True)


def tokenizer_pool(cfg: DataConfig, shape: cluster.Shape) -> tuple[int, int]:
    """(min, max) tokenizer actors: one per CPU the cluster has now, up to one per CPU it can
    grow to (a job submitted to 0 workers was sized to one actor for the whole input)."""
    if cfg.tokenizer_actors is not None:
        return cfg.tokenizer_actors, cfg.tokenizer_actors
    low = max(1, int(shape.cpus))
    return low, max(low, int(shape.max_cpus))


def _actor_pool(sizes: tuple[int, int]) -> ray.data.ActorPoolStrategy:
    """Starts at full size: its pending actors are what asks the autoscaler for the nodes
    (growing only while a queue backs up, a small or fast input never grew); Ray Data scales
    idle actors back down to ``low``."""
    low, high = sizes
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high, initial_size=high)


def build_dataset(
    cfg: DataConfig, files: list[str], tokenizer: str, dedupers: list[Any] | None = None
) -> ray.data.Dataset:
    """The pipeline up to tokenization; ``tokenizer`` is the fast tokenizer's JSON."""
    shape = cluster.shape()
    # At least ~4 read tasks per CPU the cluster can grow to (a ~2 GB file still gets
    # csv_chunk_bytes ranges).
    ds = read_source(
        cfg,
        files,
        {"num_cpus": READ_CPUS},
        min_ranges=4 * max(1, int(shape.max_cpus)),
        # Ranges in a seeded random order, so rows that are written together come from all
        # over a file sorted by game. ``limit`` keeps file order: it means "the first N rows".
        order_seed=None if cfg.limit is not None else cfg.seed,
    )
    if cfg.limit is not None:
        ds = ds.limit(cfg.limit)
    return ds.map_batches(
        _classify_batch,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=CLEAN_CPUS,
        fn_kwargs={
            "dedupers": dedupers,
            "columns": cfg.resolved_columns(),
            "clean": cfg.clean,
            "seed": cfg.seed,
            "split_by": cfg.split_by,
            "val_fraction": cfg.val_fraction,
            "test_fraction": cfg.test_fraction,
        },
    ).map_batches(
        TokenizeBatch,
        fn_constructor_kwargs={"tokenizer_json": tokenizer, "max_length": cfg.max_length},
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        # One per cluster CPU: tokenizing is the bulk of the work, and at 0.5 CPU each they
        # leave room for reads and writes (measured: 2 actors ~12% faster than 1 on 2 cores).
        compute=_actor_pool(tokenizer_pool(cfg, shape)),
        num_cpus=TOKENIZE_CPUS,
    )


def start_dedupers(n: int) -> list[Any]:
    """``n`` key-partition actors, spread over the nodes (no restarts: see DedupeShard)."""
    cls = ray.remote(num_cpus=DEDUPE_CPUS, max_restarts=0)(DedupeShard)
    return [cls.options(scheduling_strategy="SPREAD").remote() for _ in range(n)]


@contextlib.contextmanager
def _data_context(cfg: DataConfig) -> Iterator[None]:
    """Ray Data settings for one run, restored after it."""
    ctx = ray.data.DataContext.get_current()
    saved_order = ctx.execution_options.preserve_order
    saved_limits = ctx.execution_options.resource_limits
    saved_deaths = ctx.max_consecutive_actor_init_deaths
    # Dedupe no longer depends on block order (see clean.Deduper), so blocks flow as they
    # finish; only --limit ("the first N rows") needs file order.
    ctx.execution_options.preserve_order = cfg.limit is not None
    if cfg.object_store_mb is not None:
        # A fixed budget for blocks in flight: Ray Data backs off reads when it is used, so
        # memory does not grow with the input (its default is a share of the object store).
        ctx.execution_options.resource_limits = saved_limits.copy(
            object_store_memory=cfg.object_store_mb * 1024 * 1024
        )
    # Ray 2.60 sporadically loses an actor before its constructor runs ("all references
    # removed", seen at 1M rows); replace it instead of failing. A broken UDF still fails.
    ctx.max_consecutive_actor_init_deaths = max(saved_deaths, 3)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = saved_order
        ctx.execution_options.resource_limits = saved_limits
        ctx.max_consecutive_actor_init_deaths = saved_deaths


def _run(cfg: DataConfig, files: list[str], tokenizer: str, out: str) -> WriteStats:
    """Run the Ray Data pipeline, writing under ``out``; returns the sink's stats."""
    dedupers = start_dedupers(cfg.dedupe_actors) if cfg.clean.dedupe else None
    sink = PreparedDatasink(
        out,
        keep_rejected=cfg.keep_rejected,
        seed=cfg.seed,
        min_rows_per_write=cfg.min_rows_per_write,
        exit_after_files=cfg.fault_exit_after_files,
    )
    try:
        with _data_context(cfg):
            ds = build_dataset(cfg, files, tokenizer, dedupers)
            ds.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
    except Exception as exc:
        user_error = _find_user_error(exc)
        if user_error is None:
            raise
        # A DataError raised inside a Ray task arrives wrapped; surface its one line.
        raise DataError(str(user_error.args[0]) if user_error.args else str(user_error)) from exc
    finally:
        for actor in dedupers or []:
            ray.kill(actor)
    stats = sink.result or WriteStats()
    if stats.rows_kept:
        sink.write_empty_splits(stats)
    return stats


def prepare(cfg: DataConfig) -> mf.Manifest:
    """Run the whole data stage for ``cfg``; returns (and writes) the manifest.

    Everything is written to a staging directory beside ``cfg.output`` and swapped in at the
    end, so a failed run leaves the previous output as it was.
    """
    start = time.perf_counter()
    input_path = _resolve_input(cfg)
    files = check_input(cfg, input_path)
    tokenizer_path = resolve_model(cfg.model)
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load tokenizer '{cfg.model}': {exc}") from exc
    _ensure_ray()
    staging = staging_dir(cfg.output)
    fs, staging_inner = storage.resolve(staging)
    try:
        storage.makedirs(staging)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{cfg.output}: cannot write output: {exc}") from exc
    try:
        stats = _run(cfg, files, tokenizer_json(tokenizer), staging)
        manifest = _manifest(cfg, input_path, tokenizer_path, tokenizer, stats, start)
        mf.write_manifest(staging, manifest)
        swap_in(fs, staging_inner, storage.resolve(cfg.output)[1])
    finally:
        with contextlib.suppress(OSError, pa.ArrowException):
            _delete(fs, staging_inner)
    return manifest


def _manifest(
    cfg: DataConfig,
    input_path: str,
    tokenizer_path: str,
    tokenizer: Any,
    stats: WriteStats,
    start: float,
) -> mf.Manifest:
    elapsed = time.perf_counter() - start
    if stats.rows_read == 0:
        raise DataError(f"{input_path}: no rows read")
    if stats.rows_kept == 0:
        top = ", ".join(f"{r}={c}" for r, c in stats.dropped.items() if c)
        raise DataError(f"{input_path}: no rows left after cleaning ({top})")
    return mf.Manifest(
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
        # Which copy of a duplicate is kept depends on arrival order, but not what is kept:
        # the label is part of the key, so the kept rows are the same every run.
        dedupe=(
            f"exact, (group, cleaned text, label) 64-bit keys, {cfg.dedupe_actors} "
            "key-partitioned actor(s), ~16 B/kept row"
        ),
        output_columns=list(KEPT_COLUMNS),
        rejected_dir="rejected" if cfg.keep_rejected else None,
        files=len(stats.files),
    )


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
