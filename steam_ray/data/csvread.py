"""Parallel reads of one big CSV whose quoted values may hold newlines.

pyarrow's (and Ray Data's) CSV readers either fail on such a file ("CSV parser got out of sync
with chunker") or read it as one task. Here the driver cuts the file into byte ranges that end at
true record boundaries: a newline where the number of ``"`` bytes since the start of the file is
even (a doubled quote inside a quoted value adds two, so parity is kept). Each Ray read task
then parses its own range, with the header line prepended, through pyarrow.csv.

Assumes RFC 4180 quoting (a ``"`` only opens/closes quoted fields or is doubled inside one), as
Excel/pandas write it; a stray quote in an unquoted field would shift the parity from there on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from steam_ray import storage
from steam_ray.errors import DataError

#: Column added by the reader: the raw text of a row pyarrow could not parse (null otherwise).
MALFORMED_COLUMN = "__malformed__"
_SCAN_BYTES = 32 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_QUOTE = ord('"')
_NEWLINE = ord("\n")


@dataclass(frozen=True)
class CsvRange:
    path: str
    start: int  # first byte of the range (start of a record)
    end: int  # one past the last byte (just after a record's newline, or EOF)
    header: bytes  # the header record, newline included, BOM removed


def stat_input(path: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    """(filesystem, inner path, info) of an input that must exist; DataError otherwise."""
    try:
        fs, inner = storage.resolve(path)
        info = fs.get_file_info(inner)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot open input: {exc}") from exc
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"input not found: {path}")
    return fs, inner, info


def _open(path: str) -> tuple[pafs.FileSystem, str, int]:
    fs, inner, info = stat_input(path)
    if info.type != pafs.FileType.File:
        raise DataError(f"{path}: not a file")
    return fs, inner, int(info.size)


def file_size(path: str) -> int:
    return _open(path)[2]


def _even_quote_newlines(buf: bytes, parity_before: int) -> np.ndarray:
    """Offsets (in ``buf``) of newlines with an even count of quotes before them in the file."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    nl = np.flatnonzero(arr == _NEWLINE)
    if nl.size == 0:
        return nl
    quotes = np.flatnonzero(arr == _QUOTE)
    # Quotes strictly before each newline = index of the newline among sorted quote positions.
    before = np.searchsorted(quotes, nl) + parity_before
    out: np.ndarray = nl[(before & 1) == 0]
    return out


def scan_ranges(path: str, chunk_bytes: int) -> list[CsvRange]:
    """Cut ``path`` into ranges of about ``chunk_bytes`` that start and end on record boundaries.

    One sequential pass in the driver, a chunk at a time (memory ~ a few times the chunk).
    """
    fs, inner, size = _open(path)
    boundaries: list[int] = []  # record starts (after the header)
    header_end = -1
    next_target = 0
    parity = 0
    offset = 0
    try:
        with fs.open_input_stream(inner) as f:
            while True:
                buf: bytes = f.read(_SCAN_BYTES)
                if not buf:
                    break
                good = _even_quote_newlines(buf, parity) + offset
                if header_end < 0 and good.size:
                    header_end = int(good[0]) + 1
                    next_target = header_end + chunk_bytes
                    boundaries.append(header_end)
                # Every target in this chunk: the first boundary at or after it.
                while header_end >= 0 and good.size:
                    i = int(np.searchsorted(good, next_target - 1))
                    if i >= good.size:
                        break
                    cut = int(good[i]) + 1
                    if cut < size:
                        boundaries.append(cut)
                    next_target = cut + chunk_bytes
                parity = (parity + buf.count(b'"')) & 1
                offset += len(buf)
    except OSError as exc:
        raise DataError(f"{path}: cannot read input: {exc}") from exc
    if header_end < 0:
        if size == 0:
            raise DataError(f"{path}: empty file (no header line)")
        header_end = size  # a header with no newline and no data
        boundaries.append(size)
    with fs.open_input_file(inner) as f:
        header = f.read_at(header_end, 0)
    if header.startswith(_BOM):
        header = header[len(_BOM) :]
    if not header.endswith(b"\n"):
        header += b"\n"
    ends = [*boundaries[1:], size]
    return [CsvRange(path, s, e, header) for s, e in zip(boundaries, ends, strict=True) if e > s]


def read_header(path: str) -> list[str]:
    """Column names of a CSV file (its first record)."""
    fs, inner, size = _open(path)
    with fs.open_input_file(inner) as f:
        head = f.read_at(min(size, 1024 * 1024), 0)
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    if not head.strip():
        raise DataError(f"{path}: empty file (no header line)")
    try:
        reader = pacsv.open_csv(
            pa.py_buffer(head.split(b"\n", 1)[0] + b"\n"),
            read_options=pacsv.ReadOptions(use_threads=False),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: unreadable CSV header: {exc}") from exc
    return list(reader.schema.names)


def parse_range(rng: CsvRange) -> pa.Table:
    """Parse one range: every column as string; unparseable rows kept in MALFORMED_COLUMN."""
    fs, inner = storage.resolve(rng.path)
    with fs.open_input_file(inner) as f:
        body = f.read_at(rng.end - rng.start, rng.start)
    return parse_bytes(rng.header + body, source=f"{rng.path}@{rng.start}")


def parse_bytes(data: bytes, source: str = "<bytes>") -> pa.Table:
    bad: list[str] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append(row.text or "")
        return "skip"

    header = data.split(b"\n", 1)[0]
    names = pacsv.open_csv(pa.py_buffer(header + b"\n")).schema.names
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 26),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            # All strings: a non-numeric score must become a `bad_label` row, not a failed read.
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: unreadable CSV: {exc}") from exc
    table = table.append_column(MALFORMED_COLUMN, pa.nulls(table.num_rows, pa.string()))
    if bad:
        extra = {n: pa.nulls(len(bad), pa.string()) for n in names}
        extra[MALFORMED_COLUMN] = pa.array(bad, pa.string())
        table = pa.concat_tables([table, pa.table(extra)])
    return table


def iter_range_tables(rng: CsvRange, max_rows: int = 65536) -> Iterator[pa.Table]:
    """A range's rows as tables of at most ``max_rows`` (keeps Ray blocks moderate)."""
    table = parse_range(rng)
    for off in range(0, max(table.num_rows, 1), max_rows):
        yield table.slice(off, max_rows)
