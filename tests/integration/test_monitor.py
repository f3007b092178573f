"""``steam-ray monitor`` on the session's real Ray cluster: the bundled sample prepared for real
is the reference; its own test split is traffic without drift; reviews of products and
restaurants (benchmarks/heldout, never trained on) and a shifted length mix, scored by
``steam-ray predict``, are traffic with drift, each caught by the check made for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from serve_fixtures import make_checkpoint
from typer.testing import CliRunner

from steam_ray.cli import app as cli_app
from steam_ray.config import DataConfig, MonitorConfig, PredictConfig
from steam_ray.data.pipeline import prepare
from steam_ray.monitor import monitor
from steam_ray.predict import predict

pytestmark = pytest.mark.integration

HELDOUT = Path(__file__).resolve().parents[2] / "benchmarks" / "heldout"


@pytest.fixture(scope="module")
def world(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Any:
    root = tmp_path_factory.mktemp("monitor")
    data = root / "data"
    prepare(DataConfig(source="sample", output=str(data), max_length=128, limit=4000))
    ck = str(make_checkpoint(root / "ck", minilm_path, seed=7))
    return {"root": root, "data": str(data), "checkpoint": ck}


def _predicted(world: Any, name: str, texts: list[str]) -> str:
    src = world["root"] / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = world["root"] / f"pred-{name}"
    predict(PredictConfig(checkpoint=world["checkpoint"], input=str(src), output=str(out)))
    return str(out)


def _monitor(world: Any, current: str, name: str) -> dict[str, Any]:
    out = world["root"] / f"mon-{name}"
    cfg = MonitorConfig(
        reference=world["data"],
        checkpoint=world["checkpoint"],
        current=current,
        output=str(out),
        cache_dir=str(world["root"] / "cache"),
    )
    result = monitor(cfg)
    drift = json.loads((out / "drift.json").read_text())
    assert result["drift_detected"] == drift["drift_detected"]
    assert (out / "report.html").is_file() and all(
        (out / p).stat().st_size > 0
        for p in ("token_length.png", "unknown_token_rate.png", "score.png", "positive_rate.png")
    )
    return dict(drift)


def _cached(world: Any) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (world["root"] / "cache").glob("reference-*")}


def _drifted(drift: dict[str, Any]) -> set[str]:
    return {name for name, check in drift["checks"].items() if check["drift"]}


def test_the_samples_own_test_split_is_not_drift(world: Any) -> None:
    drift = _monitor(world, world["data"], "same")
    stats = {k: round(v["statistic"], 4) for k, v in drift["checks"].items()}
    assert drift["drift_detected"] is False, (drift["drifted"], stats)
    checks = drift["checks"]
    assert set(checks) == {
        "token_length_psi",
        "unknown_token_rate_psi",
        "score_psi",
        "predicted_positive_rate",
        "text_domain_classifier_auc",
        "expected_accuracy_drop",
    }
    assert checks["text_domain_classifier_auc"]["statistic"] < 0.7
    assert drift["current"]["rows"] > 100 and drift["reference"]["rows"] > 100


def _heldout(*names: str) -> list[str]:
    lines = [ln for n in names for ln in (HELDOUT / f"{n}.jsonl").read_text().splitlines()]
    return [json.loads(ln)["text"] for ln in lines if ln.strip()]


def test_reviews_of_another_domain_are_text_drift(world: Any) -> None:
    current = _predicted(world, "shops", _heldout("products", "restaurants"))
    before = _cached(world)
    drift = _monitor(world, current, "shops")
    # The reference is scored once per (data, weights, backend) and then read back.
    after = _cached(world)
    assert len(after) == 1 and all(after[p] == t for p, t in before.items())
    assert drift["drift_detected"] is True
    assert "text_domain_classifier_auc" in _drifted(drift)
    assert drift["checks"]["text_domain_classifier_auc"]["statistic"] > 0.9


def test_a_shifted_length_mix_is_length_drift(world: Any) -> None:
    test_dir = Path(world["data"]) / "test"
    texts = [
        t for f in sorted(test_dir.glob("*.parquet")) for t in pq.read_table(f)["text"].to_pylist()
    ]
    # The same reviews, four to a row: 4x the tokens (up to max_length), same words.
    long = [" ".join(texts[i : i + 4]) for i in range(0, len(texts) - 3, 4)]
    drift = _monitor(world, _predicted(world, "long", long), "long")
    assert "token_length_psi" in _drifted(drift)
    length = drift["checks"]["token_length_psi"]["detail"]
    assert length["current_mean"] > 2 * length["reference_mean"]


def test_cli_not_a_window_is_a_one_line_error(world: Any, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    args = ["monitor", "--reference", world["data"], "--checkpoint", world["checkpoint"]]
    args += ["--current", str(tmp_path), "--output", str(tmp_path / "out")]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "not a prepared dataset" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
