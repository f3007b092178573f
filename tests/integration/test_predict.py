"""``steam-ray predict`` end to end on the session's real 2-node Ray cluster: CSV, JSONL and
Parquet inputs, rejected rows with reasons, scores against the Serve Predictor, the swap that
keeps the last good output, and the CLI once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from serve_fixtures import make_checkpoint
from train_fixtures import make_rows, write_dataset
from typer.testing import CliRunner

from steam_ray.cli import app as cli_app
from steam_ray.config import PredictConfig
from steam_ray.errors import ConfigError, DataError
from steam_ray.predict import predict, score_dataset
from steam_ray.serve.backends import Predictor, weights_fingerprint

pytestmark = pytest.mark.integration

TEXTS = [r["text"] for r in make_rows(40, seed=3)]
# Long enough to be truncated at max_length, so the truncation rule is compared as well.
TEXTS += ['Great game, "quoted", with\nnewlines,' + " really fun" * 150]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    return str(make_checkpoint(tmp_path_factory.mktemp("predict_ck") / "ck", minilm_path, 5))


@pytest.fixture(scope="module")
def reference(checkpoint: str) -> Predictor:
    # What predict's "auto" is on CPU: fp32, so a row's score is its own (not its batch's).
    return Predictor(checkpoint, backend="torch", threads=1)


def _cfg(checkpoint: str, input: Path, output: Path, **kw: Any) -> PredictConfig:
    return PredictConfig(
        checkpoint=checkpoint, input=str(input), output=str(output), actors=2, **kw
    )


def _read(path: Path) -> pa.Table:
    return pads.dataset(str(path), format="parquet").to_table()


def _scored(output: Path) -> pa.Table:
    files = sorted(output.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def _check_scores(table: pa.Table, reference: Predictor, threshold: float = 0.5) -> None:
    texts = table.column("text").to_pylist()
    want = reference.scores(texts)
    got = table.column("score").to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    labels = ["positive" if s >= threshold else "negative" for s in want]
    # A near-tie could flip either way between two float paths; none may be that close.
    assert np.abs(want - threshold).min() > 1e-6
    assert table.column("label").to_pylist() == labels


def _write_csv(path: Path) -> None:
    rows = [["id", "text", "note"]]
    rows += [[str(i), t, f"n{i}"] for i, t in enumerate(TEXTS)]
    rows += [["90", "", "empty"], ["91", "   \n ", "blank"]]
    body = "".join(",".join(_quote(c) for c in r) + "\n" for r in rows)
    path.write_text(body + '92,"too","many",fields,here\n')


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def test_predict_csv_rejects_and_scores(
    ray_cluster: Any, checkpoint: str, reference: Predictor, tmp_path: Path
) -> None:
    src = tmp_path / "reviews.csv"
    _write_csv(src)
    out = tmp_path / "out"
    summary = predict(_cfg(checkpoint, src, out))

    assert summary["format"] == "csv"
    assert summary["rows_scored"] == len(TEXTS)
    assert summary["rejected"] == {"malformed": 1, "null": 0, "not_string": 0, "empty": 2}
    assert summary["rows_read"] == len(TEXTS) + 3
    version = f"sha256-{weights_fingerprint(checkpoint)[:12]}"
    assert summary["model_version"] == version
    table = _scored(out)
    # Input order kept; input columns + label, score, model_version.
    assert table.column_names == ["id", "text", "note", "label", "score", "model_version"]
    assert table.column("text").to_pylist() == TEXTS
    assert set(table.column("model_version").to_pylist()) == {version}
    _check_scores(table, reference)
    rejected = _read(out / "rejected")
    assert rejected.column_names[0] == "reason"
    by_reason = dict(
        zip(rejected.column("id").to_pylist(), rejected.column("reason").to_pylist(), strict=True)
    )
    assert by_reason == {"90": "empty", "91": "empty", None: "malformed"}
    assert "too" in rejected.column("raw_row").to_pylist()[-1]
    assert json.loads((out / "summary.json").read_text())["rows_read"] == len(TEXTS) + 3


def test_predict_parquet_dir(
    ray_cluster: Any, checkpoint: str, reference: Predictor, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    texts: list[str | None] = [*TEXTS[:20], None, " "]
    # An input "label" column (say, the truth) is kept, renamed: predict adds its own.
    truth = pa.array([i % 2 for i in range(len(texts))], pa.int64())
    pq.write_table(pa.table({"text": texts, "label": truth}), src / "a.parquet")
    pq.write_table(pa.table({"text": TEXTS[20:], "label": [1] * 21}), src / "b.parquet")
    out = tmp_path / "out"
    summary = predict(_cfg(checkpoint, src, out, batch_size=7))

    assert summary["rejected"] == {"malformed": 0, "null": 1, "not_string": 0, "empty": 1}
    assert summary["rows_scored"] == len(TEXTS)
    table = _scored(out)
    assert table.column("input_label").to_pylist() == truth.to_pylist()[:20] + [1] * 21
    _check_scores(table, reference)
    rejected = _read(out / "rejected")
    assert sorted(rejected.column("reason").to_pylist()) == ["empty", "null"]

    # Files that disagree on the text column's type: one line naming the clash.
    pq.write_table(pa.table({"text": [1, 2], "label": [0, 1]}), src / "c.parquet")
    with pytest.raises(DataError, match=r"text.*string vs int64"):
        predict(_cfg(checkpoint, src, out))
    assert json.loads((out / "summary.json").read_text()) == summary


def test_cli_jsonl_then_failed_runs_keep_last_output(
    ray_cluster: Any, checkpoint: str, reference: Predictor, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    lines = [json.dumps({"text": t, "n": i}) for i, t in enumerate(TEXTS)]
    lines += [json.dumps({"text": None, "n": 100}), json.dumps({"n": 101}), '{"text": "\\t"}']
    (src / "a.jsonl").write_text("\n".join(lines) + "\n")
    # A file whose text values are all numbers: read as an int column, rejected row by row.
    (src / "b.jsonl").write_text('{"text": 5, "n": 1}\n{"text": 6, "n": 2}\n')
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", checkpoint, "--input", str(src), "--output", str(out)]
    result = CliRunner().invoke(cli_app, [*args, "--actors", "2", "--threshold", "0.3"])
    assert result.exit_code == 0, result.output
    assert f"read {len(TEXTS) + 5} rows, scored {len(TEXTS)}" in result.stdout
    assert "null=2, not_string=2, empty=1" in result.stdout
    table = _scored(out)
    _check_scores(table, reference, threshold=0.3)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # A broken row mid-run (its Ray read task fails after the up-front checks passed), then
    # a bad checkpoint: the last good output stays as it was, no staging dir is left behind.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jsonl").write_text("\n".join(lines[:10]) + "\n")
    (bad / "b.jsonl").write_text('{"text": "fine"}\n' * 30 + '{"text": "cut\n')
    with pytest.raises(DataError, match=r"bad: ValueError"):
        predict(_cfg(checkpoint, bad, out))
    with pytest.raises(ConfigError, match="checkpoint not found"):
        predict(_cfg(str(tmp_path / "nope"), src, out))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "in", "out"]  # no staging


def test_missing_text_column_names_the_file(checkpoint: str, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_text("text,x\nhello,1\n")
    (src / "b.csv").write_text("review,x\nhello,1\n")
    with pytest.raises(DataError, match=r"b\.csv: no text column 'text' \(columns: review, x\)"):
        predict(_cfg(checkpoint, src, tmp_path / "out"))
    result = CliRunner().invoke(
        cli_app, ["predict", "--checkpoint", checkpoint, "-i", str(src / "b.csv"), "-o", "x"]
    )
    assert result.exit_code == 1
    assert "error:" in result.stderr and "b.csv: no text column 'text'" in result.stderr


def test_score_dataset_ids_path(
    ray_cluster: Any, checkpoint: str, reference: Predictor, minilm_path: str, tmp_path: Path
) -> None:
    """Prepared data (already tokenized): scored from input_ids, same scores as from text."""
    import ray

    write_dataset(tmp_path / "data", minilm_path, rows=(8, 8, 40), max_length=256)
    test_dir = tmp_path / "data" / "test"
    ds = score_dataset(ray.data.read_parquet(str(test_dir)), checkpoint, concurrency=1)
    table = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
    want = pq.read_table(test_dir)
    got = dict(
        zip(table.column("text").to_pylist(), table.column("score").to_pylist(), strict=True)
    )
    assert len(got) == table.num_rows == want.num_rows == 40
    ids = want.column("input_ids").to_pylist()
    np.testing.assert_allclose(
        [got[t] for t in want.column("text").to_pylist()],
        reference.scores_from_ids(ids),
        rtol=0,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        reference.scores_from_ids(ids), reference.scores(want.column("text").to_pylist()), atol=1e-6
    )
