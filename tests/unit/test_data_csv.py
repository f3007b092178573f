"""Record-boundary scan and parse of quirky CSV across several byte ranges (no Ray)."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import pyarrow as pa
import pytest

from steam_ray.config import ColumnMap, DataConfig
from steam_ray.data import csvread
from steam_ray.data.sources import check_input
from steam_ray.errors import DataError

HEADER = ["app_id", "app_name", "review_text", "review_score", "review_votes"]


def _quirky_rows(n: int) -> list[list[str]]:
    texts = [
        'He said "wow", then ""left""',
        "line one\nline two, with comma",
        "windows\r\nline",
        "Привет, мир — 好玩 🎮",
        "plain",
        '"',
        "",
        "a,b,c\n\n\nd",
    ]
    return [[str(i % 7), f"App, {i}", texts[i % len(texts)], "1", "0"] for i in range(n)]


def _write(path: Path, rows: list[list[str]], bom: bool = False) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8"))


def _read_all(path: Path, chunk: int) -> tuple[list[csvread.CsvRange], pa.Table]:
    ranges = csvread.scan_ranges(str(path), chunk)
    table = pa.concat_tables(t for r in ranges for t in csvread.iter_range_tables(r))
    return ranges, table


@pytest.mark.parametrize("chunk", [1024, 1500, 4096, 1 << 30])
def test_ranges_cover_file_and_parse_like_csv_module(tmp_path: Path, chunk: int) -> None:
    rows = _quirky_rows(600)
    path = tmp_path / "r.csv"
    _write(path, rows)
    ranges, table = _read_all(path, chunk)
    size = path.stat().st_size
    if chunk < size:
        assert len(ranges) > 3
    # Contiguous, non-overlapping, whole file after the header.
    assert ranges[-1].end == size
    for a, b in itertools.pairwise(ranges):
        assert a.end == b.start
    assert table.column_names == [*HEADER, csvread.MALFORMED_COLUMN]
    assert table.num_rows == len(rows)
    got = [list(r.values())[:5] for r in table.to_pylist()]
    assert got == rows  # \r\n inside quotes preserved, doubled quotes unescaped


def test_crlf_file_and_bom(tmp_path: Path) -> None:
    rows = _quirky_rows(200)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(HEADER)
    w.writerows(rows)
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode())
    _, table = _read_all(path, 1024)
    assert table.column_names[0] == "app_id"  # BOM stripped from the header
    assert [list(r.values())[:5] for r in table.to_pylist()] == rows


def test_malformed_rows_are_kept_for_counting(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "app_id,app_name,review_text,review_score,review_votes\n"
        "1,A,ok,1,0\n"
        "2,B,too,many,fields,here\n"
        "3,C,short\n"
        '4,D,"fine, too",-1,0\n'
    )
    _, table = _read_all(path, 1024)
    assert table.num_rows == 4
    bad = table.column(csvread.MALFORMED_COLUMN).to_pylist()
    assert sorted(b for b in bad if b is not None) == ["2,B,too,many,fields,here", "3,C,short"]


def test_values_read_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("app_id,review_text,review_score\n007,x,1\n8,y,abc\n9,z,\n")
    _, table = _read_all(path, 1024)
    assert table.column("app_id").to_pylist() == ["007", "8", "9"]
    assert table.column("review_score").to_pylist() == ["1", "abc", ""]


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"input not found: .*nope\.csv"):
        csvread.scan_ranges(str(tmp_path / "nope.csv"), 1024)
    cfg = DataConfig(source="steam", input=str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match=r"nope\.csv"):
        check_input(cfg, str(tmp_path / "nope.csv"))


def test_missing_column_named(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("app_id,review,review_score\n1,x,1\n")
    with pytest.raises(DataError, match=r"cols.csv: missing required column 'review_text'"):
        check_input(DataConfig(source="steam"), str(path))


def test_generic_csv_column_map(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("body,stars\nnice,5\n")
    cfg = DataConfig(source="csv", columns=ColumnMap(text="body", label="stars", group=None))
    assert check_input(cfg, str(path)) == [str(path)]
    cfg = DataConfig(source="csv", columns=ColumnMap(text="body", label="score", group=None))
    with pytest.raises(DataError, match="'score'"):
        check_input(cfg, str(path))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        check_input(DataConfig(source="steam"), str(path))


def test_invalid_utf8_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"app_id,review_text,review_score\n1,\xff\xfe bad,1\n")
    ranges = csvread.scan_ranges(str(path), 1024)
    with pytest.raises(DataError, match="unreadable CSV"):
        csvread.parse_range(ranges[0])


def test_parquet_and_jsonl_column_checks(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a"], "label": [1]}), tmp_path / "x.parquet")
    cfg = DataConfig(source="parquet", columns=ColumnMap(group=None))
    assert check_input(cfg, str(tmp_path / "x.parquet"))
    with pytest.raises(DataError, match="missing required column 'group'"):
        check_input(DataConfig(source="parquet"), str(tmp_path / "x.parquet"))
    (tmp_path / "x.jsonl").write_text('{"text": "a", "lbl": 1}\n')
    with pytest.raises(DataError, match=r"x.jsonl: missing required column 'label'"):
        check_input(
            DataConfig(source="jsonl", columns=ColumnMap(group=None)), str(tmp_path / "x.jsonl")
        )
