"""``data prepare`` at scale: key-partitioned dedupe, write-aside output, bounded file count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from steam_ray.config import DataConfig
from steam_ray.data import manifest as mf
from steam_ray.data.pipeline import prepare, start_dedupers, swap_in
from steam_ray.errors import DataError

pytestmark = pytest.mark.integration

HEADER = "app_id,app_name,review_text,review_score,review_votes\n"


def _csv(path: Path, n: int, dup_every: int = 0) -> None:
    lines = [HEADER]
    for i in range(n):
        j = i - 1 if dup_every and i % dup_every == 0 and i else i
        lines.append(f"{j % 50},G,review number {j} of the game,{1 if j % 3 else -1},0\n")
    path.write_text("".join(lines))


def test_partitioned_dedupe_actors_get_keys_only(ray_cluster: Any, tmp_path: Path) -> None:
    """Three actors: every key lands on actor key % 3, repeats found across all of them."""
    import ray

    from steam_ray.data.pipeline import dedupe_with_actors

    actors = start_dedupers(3)
    try:
        import pyarrow as pa

        keys = np.arange(1, 301, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        table = pa.table(
            {"reason": pa.array([""] * 300), "dkey": pa.array(keys)},
        )
        first = dedupe_with_actors(table, actors)
        assert first.column("reason").to_pylist() == [""] * 300
        sizes = ray.get([a.size.remote() for a in actors])
        assert sizes == [int((keys % np.uint64(3) == np.uint64(i)).sum()) for i in range(3)]
        # Another block repeating half the keys: exactly those are duplicates.
        again = pa.table({"reason": pa.array([""] * 150), "dkey": pa.array(keys[::2])})
        assert dedupe_with_actors(again, actors).column("reason").to_pylist() == ["duplicate"] * 150
        # The same block sent again (a retried task) is not its own duplicate.
        assert dedupe_with_actors(table, actors).column("reason").to_pylist() == [""] * 300
    finally:
        for a in actors:
            ray.kill(a)


def test_prepare_with_partitioned_dedupe_matches_one_actor(
    ray_cluster: Any, tmp_path: Path, minilm_path: str
) -> None:
    src = tmp_path / "r.csv"
    _csv(src, 3000, dup_every=7)
    base = DataConfig(
        source="steam", input=str(src), model=minilm_path, max_length=16, csv_chunk_bytes=8192
    )
    one = prepare(base.model_copy(update={"output": str(tmp_path / "a"), "dedupe_actors": 1}))
    three = prepare(base.model_copy(update={"output": str(tmp_path / "b"), "dedupe_actors": 3}))
    assert one.dropped["duplicate"] == three.dropped["duplicate"] == 3000 // 7 - 0
    assert one.fingerprint == three.fingerprint


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.parquet"))


def test_min_rows_per_write_bounds_file_count(
    ray_cluster: Any, tmp_path: Path, minilm_path: str
) -> None:
    src = tmp_path / "r.csv"
    _csv(src, 6000)
    cfg = DataConfig(
        source="steam",
        input=str(src),
        output=str(tmp_path / "out"),
        model=minilm_path,
        max_length=16,
        csv_chunk_bytes=4096,  # ~60 blocks
        batch_size=100,
        min_rows_per_write=2000,
    )
    m = prepare(cfg)
    # One file per split per write task of >= 2,000 input rows: at most 3 tasks x 3 splits
    # (rejected is empty here); one file per block would give ~60 per split.
    files = _files(tmp_path / "out")
    assert len(files) <= 3 * 3, files
    assert m.files == len(files)
    assert sum(pads.dataset(str(f)).count_rows() for f in files) == m.rows_kept


def test_failed_prepare_keeps_previous_output(
    ray_cluster: Any, tmp_path: Path, minilm_path: str
) -> None:
    good = tmp_path / "good.csv"
    _csv(good, 2000)
    out = tmp_path / "out"
    cfg = DataConfig(
        source="steam",
        input=str(good),
        output=str(out),
        model=minilm_path,
        max_length=16,
        csv_chunk_bytes=4096,
    )
    m = prepare(cfg)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # Mid-way bad input: bytes that are not UTF-8 deep in the file fail a read task after
    # others have already written their shards.
    bad = tmp_path / "bad.csv"
    _csv(bad, 2000)
    with bad.open("ab") as f:
        f.write(b"7,G,\xff\xfe broken \xc3\x28 bytes,1,0\n")
    with pytest.raises(DataError):
        prepare(cfg.model_copy(update={"input": str(bad)}))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert mf.read_manifest(str(out)).fingerprint == m.fingerprint
    # Nothing left beside the output either (the staging dir is removed).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "good.csv", "out"]


def test_swap_in_on_a_uri_filesystem(tmp_path: Path) -> None:
    """The swap through a non-local pyarrow filesystem (fsspec's in-memory one)."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs = PyFileSystem(FSSpecHandler(fsspec.filesystem("memory")))
    for root, tag in (("/bucket/out", b"old"), ("/bucket/out.staging-1", b"new")):
        for d in (*mf.SPLITS, "rejected"):
            fs.create_dir(f"{root}/{d}", recursive=True)
            with fs.open_output_stream(f"{root}/{d}/part-0.parquet") as f:
                f.write(tag)
        with fs.open_output_stream(f"{root}/{mf.MANIFEST_NAME}") as f:
            f.write(tag)
    with fs.open_output_stream("/bucket/out/user-notes.txt") as f:
        f.write(b"mine")
    swap_in(fs, "/bucket/out.staging-1", "/bucket/out")
    infos = fs.get_file_info(pafs.FileSelector("/bucket", recursive=True))
    files = {i.path: fs.open_input_stream(i.path).read() for i in infos if i.is_file}
    assert files == {
        **{f"/bucket/out/{d}/part-0.parquet": b"new" for d in (*mf.SPLITS, "rejected")},
        f"/bucket/out/{mf.MANIFEST_NAME}": b"new",
        "/bucket/out/user-notes.txt": b"mine",  # not ours: left alone
    }
