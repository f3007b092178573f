"""Input sources -> a Ray Dataset of raw rows, with the required columns checked up front."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
from ray.data import Datasource, FileShuffleConfig, ReadTask
from ray.data.block import BlockMetadata

from steam_ray import storage
from steam_ray.config import ColumnMap, DataConfig
from steam_ray.data import csvread
from steam_ray.errors import DataError


class CsvRangeDatasource(Datasource):
    """One read task per byte range of each CSV file (see ``csvread``)."""

    def __init__(
        self,
        paths: list[str],
        chunk_bytes: int,
        min_ranges: int = 1,
        order_seed: int | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._ranges: list[csvread.CsvRange] = []
        sizes = [csvread.file_size(p) for p in paths]
        # Smaller ranges when the input is small for the cluster: enough read tasks to keep
        # every CPU busy, and the first blocks reach the tokenizers sooner.
        target = max(256 << 10, sum(sizes) // max(1, min_ranges))
        chunk = min(chunk_bytes, target)
        for path in paths:
            self._ranges.extend(csvread.scan_ranges(path, chunk))
        if order_seed is not None:
            # Read tasks run (and their blocks reach the writers) in this order: a seeded
            # permutation spreads what one write task gets over the whole input.
            perm = np.random.default_rng(order_seed).permutation(len(self._ranges))
            self._ranges = [self._ranges[i] for i in perm]

    @property
    def ranges(self) -> list[csvread.CsvRange]:
        return self._ranges

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(r.end - r.start for r in self._ranges)

    def get_name(self) -> str:
        return "CsvRanges"

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        # One task per range whatever `parallelism` says: ranges already are the unit of work.
        tasks = []
        for rng in self._ranges:
            meta = BlockMetadata(
                num_rows=None,
                size_bytes=rng.end - rng.start,
                input_files=(rng.path,),
                exec_stats=None,
            )

            def read_fn(rng: csvread.CsvRange = rng) -> Iterable[Any]:
                return csvread.iter_range_tables(rng)

            tasks.append(ReadTask(read_fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks


def _expand(path: str, suffixes: tuple[str, ...]) -> list[str]:
    """A file, or the files with one of ``suffixes`` in a directory (sorted)."""
    fs, inner, info = csvread.stat_input(path)
    if info.type == pafs.FileType.File:
        return [path]
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    files = sorted(
        i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffixes)
    )
    if not files:
        raise DataError(f"{path}: no {'/'.join(suffixes)} files in directory")
    return [storage.user_path(path, f) for f in files]


def required_columns(columns: ColumnMap) -> list[str]:
    return [c for c in (columns.text, columns.label, columns.group) if c is not None]


def check_columns(available: Iterable[str], columns: ColumnMap, where: str) -> None:
    have = set(available)
    for col in required_columns(columns):
        if col not in have:
            raise DataError(
                f"{where}: missing required column '{col}' (found: {', '.join(sorted(have))})"
            )


_SUFFIXES: dict[str, tuple[str, ...]] = {
    "steam": (".csv",),
    "csv": (".csv",),
    "sample": (".csv",),
    "parquet": (".parquet",),
    "jsonl": (".jsonl", ".json"),
}


def _first_json_keys(path: str) -> list[str]:
    fs, inner = storage.resolve(path)
    with fs.open_input_stream(inner) as f:
        head: bytes = f.read(1 << 20)
    for line in head.split(b"\n"):
        if line.strip():
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}: line 1 is not valid JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line 1 is not a JSON object")
            return list(obj)
    raise DataError(f"{path}: empty file")


def check_input(cfg: DataConfig, input_path: str) -> list[str]:
    """The input files (file sources), after checking they exist and have the needed columns.

    Runs in the driver before any Ray work, so user errors surface in seconds.
    """
    columns = cfg.resolved_columns()
    if cfg.source == "hf":
        return [input_path]
    files = _expand(input_path, _SUFFIXES[cfg.source])
    for f in files:
        if cfg.source == "parquet":
            import pyarrow.parquet as pq

            fs, inner = storage.resolve(f)
            try:
                names = pq.read_schema(inner, filesystem=fs).names
            except Exception as exc:  # pyarrow raises several types for a corrupt file
                raise DataError(f"{f}: unreadable Parquet: {exc}") from exc
        elif cfg.source == "jsonl":
            names = _first_json_keys(f)
        else:
            names = csvread.read_header(f)
        check_columns(names, columns, f)
    return files


def read_source(
    cfg: DataConfig,
    files: list[str],
    read_args: dict[str, Any],
    min_ranges: int = 1,
    order_seed: int | None = None,
) -> ray.data.Dataset:
    """The raw rows of ``files`` (from ``check_input``) as a Ray Dataset.

    ``order_seed``: read CSV ranges / Parquet and JSONL files in a seeded random order.
    """
    ds: ray.data.Dataset
    shuffle = None if order_seed is None else FileShuffleConfig(order_seed, False)
    if cfg.source in ("steam", "csv", "sample"):
        source = CsvRangeDatasource(
            files, cfg.csv_chunk_bytes, min_ranges=min_ranges, order_seed=order_seed
        )
        # One block per range: left to itself Ray splits each read output into more blocks to
        # reach its default parallelism, and a split read cannot fuse with the map after it.
        ds = ray.data.read_datasource(
            source, override_num_blocks=max(1, len(source.ranges)), **read_args
        )
    elif cfg.source in ("parquet", "jsonl"):
        # Our filesystem (an emulator's too); every file lies under the one --input.
        fs = storage.for_ray(files[0])[1]
        where = [storage.for_ray(f)[0] for f in files]
        if cfg.source == "parquet":
            ds = ray.data.read_parquet(where, filesystem=fs, shuffle=shuffle, **read_args)
        else:
            ds = ray.data.read_json(where, lines=True, filesystem=fs, shuffle=shuffle, **read_args)
    elif cfg.source == "hf":
        ds = _read_hf(cfg, files[0], cfg.resolved_columns())
    else:
        raise DataError(f"unknown source: {cfg.source}")
    return ds


def _read_hf(cfg: DataConfig, input_path: str, columns: ColumnMap) -> ray.data.Dataset:
    import datasets

    try:
        if os.path.isdir(input_path):
            loaded = datasets.load_from_disk(input_path)
        else:
            loaded = datasets.load_dataset(input_path, split=cfg.hf_split)
    except Exception as exc:  # datasets raises many types (FileNotFound, hub errors...)
        raise DataError(f"{input_path}: cannot load Hugging Face dataset: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if cfg.hf_split not in loaded:
            raise DataError(f"{input_path}: no split '{cfg.hf_split}' (has {list(loaded)})")
        loaded = loaded[cfg.hf_split]
    check_columns(loaded.column_names, columns, input_path)
    ds: ray.data.Dataset = ray.data.from_huggingface(loaded)
    return ds
