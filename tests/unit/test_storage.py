"""storage: one cached filesystem per (scheme, bucket), Arrow's own paths, the JSON rule."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from steam_ray import storage


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    storage.clear_cache()
    yield
    storage.clear_cache()


def test_one_filesystem_per_scheme_and_bucket(tmp_path: Path) -> None:
    fs_a, inner_a = storage.resolve("gs://bucket-a/sweeps/s1")
    fs_a2, inner_a2 = storage.resolve("gs://bucket-a/registry/best.json")
    assert fs_a is fs_a2  # built once, not per call
    assert (inner_a, inner_a2) == ("bucket-a/sweeps/s1", "bucket-a/registry/best.json")
    fs_b, inner_b = storage.resolve("gs://bucket-b/sweeps/s1")
    assert fs_b is not fs_a and inner_b == "bucket-b/sweeps/s1"  # buckets do not mix
    assert storage.resolve("gcs://bucket-a/x")[0] is not fs_a  # nor schemes
    local, inner = storage.resolve(str(tmp_path / "a"))
    assert isinstance(local, pafs.LocalFileSystem) and inner == str(tmp_path / "a")
    assert storage.resolve(f"file://{tmp_path}/b")[0] is local  # one LocalFileSystem
    storage.clear_cache()
    assert storage.resolve("gs://bucket-a/sweeps/s1")[0] is not fs_a  # rebuilt after a clear


@pytest.mark.parametrize(
    "uri",
    [
        "gs://bucket",
        "gs://bucket/",
        "gs://bucket/a/b",
        "gs://bucket/a/b//",
        "gs://bucket//a//b",
        "gs://b.x/year=2024/part-0.parquet",
        "gcs://b_1/a,b+c~d",
        "gs://bucket/a%20b/c",  # escapes, queries, fragments: Arrow's whole-URI parse
        "gs://bucket/a#frag",
        "gs://Bucket/a",
    ],
)
def test_paths_are_those_of_arrow_from_uri(uri: str) -> None:
    fs, inner = storage.resolve(uri)
    arrow_fs, arrow_inner = pafs.FileSystem.from_uri(uri)
    assert inner == arrow_inner
    assert type(fs) is type(arrow_fs)


@pytest.mark.parametrize("uri", ["gs://bucket/a b", "gs://bucket/a?x=1", "gs://user@bucket/a"])
def test_bad_uris_fail_as_arrow_fails(uri: str) -> None:
    with pytest.raises(pa.ArrowInvalid) as arrow:
        pafs.FileSystem.from_uri(uri)
    with pytest.raises(pa.ArrowInvalid, match=re.escape(str(arrow.value))):
        storage.resolve(uri)


def test_json_files(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "x.json")
    storage.write_json(path, {"a": 1, "when": date(2026, 1, 2)})
    text = Path(path).read_text()
    assert text == json.dumps({"a": 1, "when": "2026-01-02"}, indent=2) + "\n"
    assert storage.read_json(path) == {"a": 1, "when": "2026-01-02"}
    storage.write_json(path, {"step": 3}, indent=None)
    assert Path(path).read_text() == '{"step": 3}\n'
    fs, inner = storage.resolve(path)
    storage.write_json_at(fs, inner, [1, 2])
    assert storage.read_json_at(fs, inner) == [1, 2] == storage.read_json(path)


def test_publish_swaps_owned_entries_marker_last_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, stage = tmp_path / "out", tmp_path / "out.staging-x"
    for d, names in (
        (out, ("drift.json", "old.png", "notes.txt")),
        (stage, ("drift.json", "new.png")),
    ):
        d.mkdir()
        for n in names:
            (d / n).write_text(f"{d.name}/{n}")
    moves: list[tuple[str, str]] = []
    real = storage.move_at

    def recording(fs: pafs.FileSystem, src: str, dst: str) -> None:
        moves.append((Path(src).name, Path(dst).parent.name))
        real(fs, src, dst)

    monkeypatch.setattr(storage, "move_at", recording)
    owned = {"drift.json", "old.png", "new.png"}
    storage.publish(str(stage), str(out), "drift.json", owned.__contains__)
    assert sorted(p.name for p in out.iterdir()) == ["drift.json", "new.png", "notes.txt"]
    assert (out / "drift.json").read_text() == "out.staging-x/drift.json"
    assert (out / "notes.txt").read_text() == "out/notes.txt"  # not ours: untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, no .old-*
    assert moves[0][0] == "drift.json" and moves[-1] == ("drift.json", "out")
