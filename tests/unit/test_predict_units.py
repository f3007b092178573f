"""predict's pieces without Ray: row reasons, format detection, the sink's files, the swap, and
how the model version and threshold are chosen (a real registry on disk)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serve_fixtures import make_checkpoint

from steam_ray.config import PredictConfig
from steam_ray.data.csvread import MALFORMED_COLUMN
from steam_ray.errors import ConfigError
from steam_ray.predict import PredictDatasink, classify, detect_format, resolve_model, swap_in


def test_classify_reasons_and_renamed_columns() -> None:
    batch = pa.table(
        {
            "text": ["ok", "", " \t\n", None, "fine", None],
            "label": [1, 0, 1, 0, 1, 0],
            MALFORMED_COLUMN: [None, None, None, None, None, "a,b,c,d"],
        }
    )
    out = classify(batch, "text")
    assert out.column_names == ["text", "input_label", MALFORMED_COLUMN, "reason"]
    assert out.column("reason").to_pylist() == [None, "empty", "empty", "null", None, "malformed"]
    numbers = classify(pa.table({"review": [1, None]}), "review")
    assert numbers.column("reason").to_pylist() == ["not_string", "null"]
    # Kept as their text, so every block's text column is a string (see _as_text).
    assert numbers.column("review").to_pylist() == ["1", None]
    lists = classify(pa.table({"text": [[1, 2]]}), "text")
    assert lists.to_pylist() == [{"text": "[1, 2]", "reason": "not_string"}]


def test_detect_format(tmp_path: Path) -> None:
    (tmp_path / "a.JSONL").write_text("{}\n")
    assert detect_format(str(tmp_path / "a.JSONL")) == "jsonl"
    sub = tmp_path / "dir"
    (sub / "nested").mkdir(parents=True)
    (sub / "nested" / "x.parquet").write_bytes(b"")
    (sub / "README.md").write_text("not data")
    assert detect_format(str(sub)) == "parquet"
    (sub / "y.csv").write_text("text\n")
    with pytest.raises(ConfigError, match=r"holds csv, parquet files.*--format"):
        detect_format(str(sub))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"notes\.txt: cannot tell the input format"):
        detect_format(str(tmp_path / "notes.txt"))


def test_sink_splits_scored_and_rejected_rows(tmp_path: Path) -> None:
    block = pa.table(
        {
            "text": ["good", "bad", None, "meh"],
            MALFORMED_COLUMN: [None, None, "x,y", None],
            "reason": [None, None, "malformed", None],
            "score": [0.9, 0.1, None, 0.5],
        }
    )
    sink = PredictDatasink(str(tmp_path), threshold=0.5, version="v7", min_rows=10)
    result = sink.write([block], SimpleNamespace(task_idx=3))
    assert (result.scored, result.positive, result.rejected["malformed"]) == (3, 2, 1)
    assert result.files == ["part-00003.parquet", "rejected/part-00003.parquet"]
    scored = pq.read_table(tmp_path / "part-00003.parquet")
    assert scored.column_names == ["text", "label", "score", "model_version"]
    # The label rule is score >= threshold: 0.5 itself is positive.
    assert scored.column("label").to_pylist() == ["positive", "negative", "positive"]
    rejected = pq.read_table(tmp_path / "rejected" / "part-00003.parquet")
    assert rejected.to_pylist() == [{"reason": "malformed", "text": None, "raw_row": "x,y"}]


def test_swap_replaces_only_predict_files(tmp_path: Path) -> None:
    out, staging = tmp_path / "out", tmp_path / "out.staging-1"
    (out / "rejected").mkdir(parents=True)
    for name in ("part-00000.parquet", "part-00001.parquet", "rejected/part-00000.parquet"):
        (out / name).write_text("old")
    (out / "summary.json").write_text("old")
    (out / "notes.txt").write_text("mine")
    staging.mkdir()
    (staging / "part-00000.parquet").write_text("new")
    (staging / "summary.json").write_text("new")
    swap_in(str(staging), str(out))
    files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert files == {"part-00000.parquet": "new", "summary.json": "new", "notes.txt": "mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_model_version_and_threshold(tmp_path: Path, minilm_path: str) -> None:
    from steam_ray.registry import Registry, register_checkpoint
    from steam_ray.serve.backends import weights_fingerprint

    ck = str(make_checkpoint(tmp_path / "ck", minilm_path, 2))
    plain = resolve_model(PredictConfig(checkpoint=ck))
    assert (plain.version, plain.threshold) == (f"sha256-{weights_fingerprint(ck)[:12]}", 0.5)

    root = str(tmp_path / "registry")
    reg = register_checkpoint(
        root, "steam-sentiment", ck, metric="accuracy", mode="max", config={}, lineage={}
    )
    version = reg.version.version
    Registry(root).attach_evaluation("steam-sentiment", version, {"threshold": 0.7}, "# card\n")
    tuned = resolve_model(PredictConfig(checkpoint="best", registry=root))
    assert (tuned.version, tuned.threshold) == (version, 0.7)
    forced = resolve_model(
        PredictConfig(checkpoint=f"steam-sentiment:{version}", registry=root, threshold=0.2)
    )
    assert (forced.version, forced.threshold) == (version, 0.2)


def test_sink_writes_blocks_of_different_schemas_apart(tmp_path: Path) -> None:
    """Two input files whose ``id`` columns differ in type reach one write task."""
    blocks = [
        pa.table({"id": ["a"], "text": ["x"], "reason": [None], "score": [0.7]}),
        pa.table({"id": [1], "text": ["y"], "reason": pa.nulls(1, pa.string()), "score": [0.2]}),
        pa.table({"id": [2], "text": ["z"], "reason": pa.nulls(1, pa.string()), "score": [0.9]}),
    ]
    sink = PredictDatasink(str(tmp_path), threshold=0.5, version="v", min_rows=10)
    result = sink.write(blocks, SimpleNamespace(task_idx=0))
    assert result.files == ["part-00000.parquet", "part-00000-1.parquet"]
    assert pq.read_table(tmp_path / "part-00000.parquet").column("id").to_pylist() == ["a"]
    assert pq.read_table(tmp_path / "part-00000-1.parquet").column("id").to_pylist() == [1, 2]
