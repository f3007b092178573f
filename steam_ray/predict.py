"""``steam-ray predict``: batch inference over a file, directory or URI with Ray Data.

    read (CSV byte ranges / Parquet / JSONL)  -> tasks
    check the text column: null / not a string / empty rows get a reason  -> tasks
    score the valid rows (ScoreBatch: the Serve ``Predictor``, loaded once per actor)
        -> an actor pool, one actor per CPU (or GPU) the cluster has, up to what it can grow to
    write scored rows and rejected rows (with their reason) as Parquet  -> Datasink
    swap the staging dir in; a failed run leaves the previous output as it was

``ScoreBatch`` and ``score_dataset`` are the reusable part (``steam-ray evaluate`` scores a
prepared split with them).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data import Datasink

from steam_ray import cluster, storage
from steam_ray.config import Backend, DataConfig, PredictConfig
from steam_ray.data import csvread, sources
from steam_ray.errors import ConfigError, DataError, SteamRayError
from steam_ray.serve.source import materialize, resolve_source

#: Prepared data (``data prepare`` output) is already tokenized: scored from these ids.
IDS_COLUMN = "input_ids"
SCORE_COLUMN = "score"
# CPUs reserved per scoring actor. Each actor runs one intra-op thread, so it uses one core;
# half a CPU token per actor leaves room for the read and write tasks beside a full pool
# (whole-CPU actors on every CPU would leave a default 1-CPU read task nowhere to run).
SCORE_CPUS = 0.5


class ScoreBatch:
    """Ray Data callable class: a batch in, the batch plus float64 ``score`` = P(positive) out.

    Rows with ``input_ids`` (prepared data) are scored from those ids; otherwise
    ``text_column`` is tokenized with the checkpoint's tokenizer. Either way rows run in
    length-sorted chunks under the Predictor's token budget (one batching rule, as in Serve).
    An existing ``score`` column is replaced; rows with a non-null ``skip_column`` are not
    scored (null score).
    """

    def __init__(
        self,
        checkpoint: str,
        backend: str = "auto",
        device: str = "cpu",
        threads: int | None = None,
        text_column: str = "text",
        max_length: int = 256,
        skip_column: str | None = None,
    ) -> None:
        from steam_ray.serve.backends import Predictor, resolve_backend

        self.text_column = text_column
        self.skip_column = skip_column
        self.predictor = Predictor(
            materialize(checkpoint),
            # A row's score must not depend on the file's order (which rows share a batch).
            backend=resolve_backend(_backend(backend), device, batch_independent=True),
            device=device,
            threads=threads,
            max_length=max_length,
        )

    def scores(self, batch: pa.Table) -> np.ndarray:
        if IDS_COLUMN in batch.column_names:
            rows = _id_rows(batch.column(IDS_COLUMN))
            # numpy rows index and len() like the int lists the Predictor's type names.
            return self.predictor.scores_from_ids(cast("list[Sequence[int]]", rows))
        texts: list[str] = batch.column(self.text_column).to_pylist()
        return self.predictor.scores(texts)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if SCORE_COLUMN in batch.column_names:
            batch = batch.drop_columns([SCORE_COLUMN])
        if self.skip_column is None:
            return batch.append_column(SCORE_COLUMN, pa.array(self.scores(batch), pa.float64()))
        # Rows with a value in skip_column (predict's rejected rows) get a null score; the
        # rows to score keep their order, ahead of the skipped ones.
        keep = pc.is_null(batch.column(self.skip_column))
        scored = batch.filter(keep)
        scored = scored.append_column(SCORE_COLUMN, pa.array(self.scores(scored), pa.float64()))
        rest = batch.filter(pc.invert(keep))
        rest = rest.append_column(SCORE_COLUMN, pa.nulls(rest.num_rows, pa.float64()))
        return pa.concat_tables([scored, rest])


def _backend(name: str) -> Backend:
    from typing import get_args

    if name not in get_args(Backend):
        raise ConfigError(f"unknown backend {name!r} (one of {', '.join(get_args(Backend))})")
    return name  # type: ignore[return-value]


def _id_rows(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A list<int> column as one numpy view per row (no Python int per token)."""
    arr = column.combine_chunks()
    if isinstance(arr, pa.ChunkedArray):  # an empty column stays chunked
        arr = pa.array([], pa.list_(pa.int32()))
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(arr))]


def pool_size(use_gpu: bool, concurrency: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """(min, max) scoring actors: one per CPU (GPU) the cluster has now, up to one per CPU
    (GPU) it can grow to, unless ``concurrency`` says otherwise."""
    if isinstance(concurrency, int):
        return concurrency, concurrency
    if concurrency is not None:
        return concurrency
    shape = cluster.shape()
    now, most = (shape.gpus, shape.max_gpus) if use_gpu else (shape.cpus, shape.max_cpus)
    if use_gpu and most < 1:
        raise ConfigError("--use-gpu: the Ray cluster has no GPUs and cannot add any")
    low = max(1, int(now))
    return low, max(low, int(most))


def score_dataset(
    ds: ray.data.Dataset,
    checkpoint: str,
    *,
    backend: str = "auto",
    use_gpu: bool = False,
    text_column: str = "text",
    batch_size: int = 256,
    concurrency: int | tuple[int, int] | None = None,
    max_length: int = 256,
    skip_column: str | None = None,
) -> ray.data.Dataset:
    """``ds`` plus a ``score`` column, scored by a pool of ``ScoreBatch`` actors.

    ``checkpoint`` is a resolved checkpoint path or URI (``serve.source.resolve_source``).
    """
    from steam_ray.data.pipeline import _actor_pool

    low, high = pool_size(use_gpu, concurrency)
    if not 1 <= low <= high:
        raise ConfigError(f"scoring actors: need 1 <= min <= max, got ({low}, {high})")
    return ds.map_batches(
        ScoreBatch,
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "backend": backend,
            "device": "cuda" if use_gpu else "cpu",
            # One thread per CPU actor: N single-threaded actors beat one N-threaded one.
            "threads": None if use_gpu else 1,
            "text_column": text_column,
            "max_length": max_length,
            "skip_column": skip_column,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=_actor_pool((low, high)),
        num_cpus=SCORE_CPUS,
        num_gpus=1 if use_gpu else 0,
        udf_modifying_row_count=False,  # one score per row in
    )


# -- steam-ray predict ----------------------------------------------------------------------

#: Why a row was not scored (counted in the summary, written to OUTPUT/rejected/).
REASONS: tuple[str, ...] = ("malformed", "null", "not_string", "empty")
REASON_COLUMN = "reason"
LABEL_COLUMN = "label"
VERSION_COLUMN = "model_version"
#: Columns predict adds: an input column of the same name is kept as ``input_<name>``.
ADDED_COLUMNS: tuple[str, ...] = (LABEL_COLUMN, SCORE_COLUMN, VERSION_COLUMN, REASON_COLUMN)
#: A CSV row pyarrow could not parse, kept in rejected/ under this name.
RAW_ROW_COLUMN = "raw_row"
FORMATS: dict[str, tuple[str, ...]] = {
    "csv": (".csv",),
    "parquet": (".parquet",),
    "jsonl": (".jsonl", ".json"),
}
SUMMARY_FILE = "summary.json"
REJECTED_DIR = "rejected"
# Read and check tasks: small CPU shares, so they run beside a full pool of scoring actors.
READ_CPUS = 0.25
WRITE_CPUS = 0.25


def _say(message: str) -> None:
    """One progress line per stage, on stderr (stdout carries the summary)."""
    print(f"predict: {message}", file=sys.stderr, flush=True)


def detect_format(path: str) -> str:
    """csv / parquet / jsonl from a file's extension, or the one kind of file a directory
    holds; a ConfigError asking for --format otherwise."""
    fs, inner, info = csvread.stat_input(path)
    if info.type == pafs.FileType.File:
        names = [inner]
    else:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        names = [i.path for i in infos if i.type == pafs.FileType.File]
    found = sorted({f for f, ext in FORMATS.items() for n in names if n.lower().endswith(ext)})
    if len(found) == 1:
        return found[0]
    what = f"holds {', '.join(found)} files" if found else "has no .csv/.parquet/.jsonl files"
    raise ConfigError(f"{path}: cannot tell the input format ({what}); pass --format")


def _columns_of(path: str, fmt: str) -> list[str]:
    if fmt == "csv":
        return csvread.read_header(path)
    if fmt == "jsonl":
        return sources._first_json_keys(path)
    fs, inner = storage.resolve(path)
    try:
        return list(pq.read_schema(inner, filesystem=fs).names)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: unreadable Parquet: {exc}") from exc


def check_input(cfg: PredictConfig) -> tuple[str, list[str]]:
    """(format, files) after checking every file has the text column; runs before any Ray
    work, so a wrong path or column is a one-line error in seconds."""
    if not cfg.input:
        raise ConfigError("predict needs --input (a file, directory or URI)")
    fmt = detect_format(cfg.input) if cfg.format == "auto" else cfg.format
    files = sources._expand(cfg.input, FORMATS[fmt])
    for f in files:
        names = _columns_of(f, fmt)
        if cfg.text_column not in names:
            raise DataError(
                f"{f}: no text column {cfg.text_column!r} (columns: {', '.join(names) or 'none'})"
                "; pass --text-column"
            )
    return fmt, files


def _reasons(batch: pa.Table, text_column: str) -> pa.Array:
    """Per row: why it cannot be scored (malformed CSV row, null, not a string, empty or
    whitespace only), or null for a row to score. The first reason that applies wins."""
    col = batch.column(text_column)
    out = np.full(batch.num_rows, None, dtype=object)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        blank = pc.equal(pc.utf8_trim_whitespace(col), "")
        out[pc.fill_null(blank, False).to_numpy(zero_copy_only=False)] = "empty"
    else:
        out[:] = "not_string"
    out[pc.is_null(col).to_numpy(zero_copy_only=False)] = "null"
    if csvread.MALFORMED_COLUMN in batch.column_names:
        bad = pc.is_valid(batch.column(csvread.MALFORMED_COLUMN))
        out[bad.to_numpy(zero_copy_only=False)] = "malformed"
    return pa.array(out, pa.string())


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """The text column as ``string``: numbers etc. as their text, so blocks of every input file
    share one type (Ray Data concatenates blocks into batches, and int64 does not unify with
    string); rows that were not strings are rejected before this."""
    if col.type == pa.string():
        return col
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # lists, structs: Python's str()
        values = [None if v is None else str(v) for v in col.to_pylist()]
        return pa.chunked_array([pa.array(values, pa.string())])


def classify(batch: pa.Table, text_column: str) -> pa.Table:
    """The batch with input columns named like ours renamed ``input_<name>``, the text column
    as strings, plus ``reason``."""
    names = [f"input_{n}" if n in ADDED_COLUMNS else n for n in batch.column_names]
    batch = batch.rename_columns(names)
    reasons = _reasons(batch, text_column)
    at = batch.column_names.index(text_column)
    batch = batch.set_column(at, text_column, _as_text(batch.column(at)))
    return batch.append_column(REASON_COLUMN, reasons)


@dataclass
class WriteResult:
    """What one write task wrote (``merge`` adds them up)."""

    scored: int = 0
    positive: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    files: list[str] = field(default_factory=list)

    def merge(self, other: WriteResult) -> None:
        self.scored += other.scored
        self.positive += other.positive
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        self.files.extend(other.files)


def scored_rows(table: pa.Table, threshold: float, version: str) -> pa.Table:
    """Rows with a score: the input columns + label, score, model_version."""
    from steam_ray.serve.backends import label_of

    table = table.drop_columns(
        [c for c in (REASON_COLUMN, csvread.MALFORMED_COLUMN) if c in table.column_names]
    )
    scores = table.column(SCORE_COLUMN)
    labels = pa.array([label_of(s, threshold) for s in scores.to_pylist()], pa.string())
    table = table.drop_columns([SCORE_COLUMN])
    return (
        table.append_column(LABEL_COLUMN, labels)
        .append_column(SCORE_COLUMN, scores)
        .append_column(VERSION_COLUMN, pa.array([version] * table.num_rows, pa.string()))
    )


def rejected_rows(table: pa.Table) -> pa.Table:
    """Rows not scored: their reason first, then the input columns (a CSV row pyarrow could
    not parse as ``raw_row``)."""
    table = table.drop_columns([SCORE_COLUMN])
    names = [RAW_ROW_COLUMN if n == csvread.MALFORMED_COLUMN else n for n in table.column_names]
    table = table.rename_columns(names)
    order = [REASON_COLUMN, *(n for n in table.column_names if n != REASON_COLUMN)]
    return table.select(order)


def _merge_compatible(tables: list[pa.Table]) -> list[pa.Table]:
    """Consecutive tables concatenated while their schemas unify (int32 with int64, a null
    column with any), in order."""
    out: list[list[pa.Table]] = []
    for table in tables:
        if out:
            try:
                pa.unify_schemas([out[-1][0].schema, table.schema], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass
            else:
                out[-1].append(table)
                continue
        out.append([table])
    return [pa.concat_tables(group, promote_options="permissive") for group in out]


class PredictDatasink(Datasink["WriteResult"]):
    """OUTPUT/part-NNNNN.parquet (scored rows) and OUTPUT/rejected/part-NNNNN.parquet.

    Files are named by the write task's index: with ``preserve_order`` the same input gives
    the same tasks, hence the same names, and a retried task overwrites its own files.
    """

    def __init__(self, output: str, threshold: float, version: str, min_rows: int) -> None:
        self.output = output
        self.threshold = threshold
        self.version = version
        self._min_rows = min_rows
        self.result: WriteResult | None = None

    @property
    def min_rows_per_write(self) -> int | None:
        return self._min_rows

    def get_name(self) -> str:
        return "PredictParquet"

    def write(self, blocks: Iterable[Any], ctx: Any) -> WriteResult:
        out = WriteResult()
        scored: list[pa.Table] = []
        rejected: list[pa.Table] = []
        for block in blocks:
            table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            done = pc.is_null(table.column(REASON_COLUMN))
            ok = scored_rows(table.filter(done), self.threshold, self.version)
            bad = table.filter(pc.invert(done))
            out.scored += ok.num_rows
            out.positive += int(pc.sum(pc.equal(ok.column(LABEL_COLUMN), "positive")).as_py() or 0)
            for reason, n in Counter(bad.column(REASON_COLUMN).to_pylist()).items():
                out.rejected[reason] += n
            scored += [ok] if ok.num_rows else []
            rejected += [rejected_rows(bad)] if bad.num_rows else []
        stem = f"part-{getattr(ctx, 'task_idx', 0):05d}"
        for where, parts in ((stem, scored), (f"{REJECTED_DIR}/{stem}", rejected)):
            # Blocks of one task may not share a schema (files whose columns differ in type):
            # one file per run of compatible blocks, the first one named after the task alone.
            for k, table in enumerate(_merge_compatible(parts)):
                name = f"{where}.parquet" if k == 0 else f"{where}-{k}.parquet"
                fs, inner = storage.resolve(storage.join(self.output, name))
                fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
                pq.write_table(table, inner, filesystem=fs, compression="zstd")
                out.files.append(name)
        return out

    def on_write_complete(self, write_result: Any) -> None:
        total = WriteResult()
        for part in write_result.write_returns:
            if part is not None:
                total.merge(part)
        self.result = total


def _ours(name: str) -> bool:
    """Entries of an output dir that a predict run writes (and a later run replaces)."""
    return name in (SUMMARY_FILE, REJECTED_DIR) or (
        name.startswith("part-") and name.endswith(".parquet")
    )


def swap_in(staging: str, output: str) -> None:
    """Replace ``output``'s predictions with ``staging``'s (storage.publish: the old summary
    leaves first, the new one arrives last; other files in ``output`` stay)."""
    storage.publish(staging, output, SUMMARY_FILE, _ours)


@dataclass(frozen=True)
class _Model:
    """The resolved checkpoint, and how its rows are labelled and named."""

    path: str
    ref: str
    version: str
    threshold: float


def resolve_model(cfg: PredictConfig) -> _Model:
    """The checkpoint (path, run dir, ``best``, ``NAME:VERSION``), its version as Serve names
    it (registry version, else a hash of its weights) and the decision threshold: the flag,
    else the registry version's tuned one (``steam-ray evaluate``), else 0.5."""
    from steam_ray.serve.backends import weights_fingerprint

    if not cfg.checkpoint:
        raise ConfigError("predict needs --checkpoint (a path, run dir, best or NAME:VERSION)")
    src = resolve_source(cfg.checkpoint, cfg.registry)
    version = src.version or f"sha256-{weights_fingerprint(materialize(src.path))[:12]}"
    tuned = getattr(src, "threshold", None)  # older ModelSource: no tuned threshold
    threshold = cfg.threshold if cfg.threshold is not None else tuned
    return _Model(src.path, src.ref, version, 0.5 if threshold is None else float(threshold))


@contextlib.contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data settings for one run, restored after it."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    saved_deaths = ctx.max_consecutive_actor_init_deaths
    # Input order in, input order out: the same input gives the same files and rows.
    ctx.execution_options.preserve_order = True
    # Progress bars on a terminal only: in a log (a job, CI) they are thousands of lines.
    ctx.enable_progress_bars = saved[1] and sys.stderr.isatty()
    # See data.pipeline._data_context: replace an actor lost before its constructor ran
    # ("all references removed"; here 4 in a row once on a 2-core host at load ~90).
    ctx.max_consecutive_actor_init_deaths = max(saved_deaths, 10)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        ctx.max_consecutive_actor_init_deaths = saved_deaths


def build_dataset(cfg: PredictConfig, fmt: str, files: list[str], model: _Model) -> Any:
    """Read -> classify -> score (actor pool); the rows of every input file, in order."""
    shape = cluster.shape()
    read_cfg = DataConfig(source=fmt, csv_chunk_bytes=cfg.csv_chunk_bytes)
    # ~4 read tasks per CPU the cluster can grow to, so every actor gets blocks early.
    ds = sources.read_source(
        read_cfg, files, {"num_cpus": READ_CPUS}, min_ranges=4 * max(1, int(shape.max_cpus))
    )
    ds = ds.map_batches(
        partial(classify, text_column=cfg.text_column),
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=READ_CPUS,
    )
    return score_dataset(
        ds,
        model.path,
        backend=cfg.backend,
        use_gpu=cfg.use_gpu,
        text_column=cfg.text_column,
        batch_size=cfg.batch_size,
        concurrency=cfg.actors,
        max_length=cfg.max_length,
        skip_column=REASON_COLUMN,
    )


def _user_error(exc: Exception, where: str) -> SteamRayError | None:
    """A user error raised inside a Ray task, unwrapped: ours, or the reader's for input it
    cannot read (bad JSON, a column whose type changes between files: a ValueError or Arrow's
    type error at the root of the chain)."""
    from steam_ray.data.pipeline import _find_user_error

    found = _find_user_error(exc)
    if found is not None:
        return DataError(str(found.args[0]) if found.args else str(found))
    root: BaseException = exc
    while True:
        cause = getattr(root, "cause", None) or root.__cause__
        if not isinstance(cause, BaseException) or cause is root:
            break
        root = cause
    if isinstance(root, (ValueError, pa.ArrowTypeError)) and not isinstance(
        root, ray.exceptions.RayError
    ):
        lines = str(root).strip().splitlines()
        return DataError(f"{where}: {type(root).__name__}: {lines[0] if lines else ''}")
    return None


def _run(cfg: PredictConfig, fmt: str, files: list[str], model: _Model, out: str) -> WriteResult:
    sink = PredictDatasink(out, model.threshold, model.version, cfg.min_rows_per_write)
    try:
        with _data_context():
            ds = build_dataset(cfg, fmt, files, model)
            ds.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
    except Exception as exc:
        user_error = _user_error(exc, str(cfg.input))
        if user_error is None:
            raise
        raise user_error from exc
    return sink.result or WriteResult()


def _check_paths(cfg: PredictConfig) -> None:
    """The swap replaces part-*.parquet in --output: it must not be (inside) the input."""
    assert cfg.input is not None
    _, src = storage.resolve(cfg.input)
    _, dst = storage.resolve(cfg.output)
    if dst == src or src.startswith(dst.rstrip("/") + "/"):
        raise ConfigError(f"--output {cfg.output} holds the input {cfg.input}: pick another dir")


def predict(cfg: PredictConfig) -> dict[str, Any]:
    """Score every row of ``cfg.input``; returns (and writes as OUTPUT/summary.json) the
    summary. Files go to a staging dir beside the output and are swapped in at the end, so a
    failed run leaves the previous output as it was."""
    start = time.perf_counter()
    fmt, files = check_input(cfg)
    _check_paths(cfg)
    model = resolve_model(cfg)
    _say(f"model {model.ref} -> {model.path}")
    _say(f"model version {model.version}, threshold {model.threshold:g}")
    cluster.connect(log_to_driver=True)
    low, high = pool_size(cfg.use_gpu, cfg.actors)
    _say(f"reading {len(files)} {fmt} file(s) from {cfg.input}; scoring on {low}-{high} actor(s)")
    staging = storage.staging_dir(cfg.output)
    fs, staging_inner = storage.resolve(staging)
    try:
        storage.makedirs(staging)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{cfg.output}: cannot write output: {exc}") from exc
    try:
        result = _run(cfg, fmt, files, model, staging)
        summary = _summary(cfg, fmt, files, model, result, (low, high), start)
        if summary["rows_read"] == 0:
            raise DataError(f"{cfg.input}: no rows read")
        storage.write_json(storage.join(staging, SUMMARY_FILE), summary)
        swap_in(staging, cfg.output)
    finally:
        with contextlib.suppress(OSError, pa.ArrowException):
            storage.delete_at(fs, staging_inner)
    _say(f"wrote {len(result.files)} file(s) to {cfg.output} in {summary['seconds']:.1f}s")
    return summary


def _summary(
    cfg: PredictConfig,
    fmt: str,
    files: list[str],
    model: _Model,
    result: WriteResult,
    actors: tuple[int, int],
    start: float,
) -> dict[str, Any]:
    rejected = sum(result.rejected.values())
    seconds = time.perf_counter() - start
    rows = result.scored + rejected
    return {
        "input": cfg.input,
        "format": fmt,
        "input_files": len(files),
        "text_column": cfg.text_column,
        "checkpoint": model.path,
        "ref": model.ref,
        "model_version": model.version,
        "threshold": model.threshold,
        "backend": cfg.backend,
        "device": "cuda" if cfg.use_gpu else "cpu",
        "actors": list(actors),
        "rows_read": rows,
        "rows_scored": result.scored,
        "rows_rejected": rejected,
        "rejected": result.rejected,
        "positive": result.positive,
        "negative": result.scored - result.positive,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1) if seconds > 0 else 0.0,
        "output": cfg.output,
        "files": sorted(result.files),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run summary: rows read / scored / rejected by reason, time, output."""
    print(
        f"read {summary['rows_read']:,} rows, scored {summary['rows_scored']:,} "
        f"(positive {summary['positive']:,}, negative {summary['negative']:,}) "
        f"in {summary['seconds']:.1f}s ({summary['rows_per_s']:,.0f} rows/s)"
    )
    reasons = ", ".join(f"{r}={n:,}" for r, n in summary["rejected"].items())
    print(f"rejected {summary['rows_rejected']:,}: {reasons}")
    version, threshold = summary["model_version"], summary["threshold"]
    print(f"model: {summary['ref']} (version {version}, threshold {threshold:g})")
    print(f"output: {summary['output']} ({SUMMARY_FILE}, {REJECTED_DIR}/)")
