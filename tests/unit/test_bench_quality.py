"""benchmarks/bench_quality.py labels at the threshold the model is served with, not only 0.5:
a quickstart summary.json's tuned threshold is read, and the held-out mean leaves the sample's
test split out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_quality  # noqa: E402


def test_summary_json_gives_checkpoint_and_served_threshold(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"best_checkpoint": "/ck/model", "threshold": 0.4428}))
    assert bench_quality.checkpoint_path(str(summary)) == ("/ck/model", 0.4428)
    summary.write_text(json.dumps({"best_checkpoint": "/ck/model"}))  # never evaluated
    assert bench_quality.checkpoint_path(str(summary)) == ("/ck/model", None)


def test_accuracy_uses_the_threshold_and_mean_excludes_the_sample() -> None:
    # Scores between the two thresholds flip: 0.45 is positive at 0.44, negative at 0.5.
    scored = {
        "sample_test": ([0.9, 0.1], [0, 0]),
        "films": ([0.45, 0.2, 0.8, 0.46], [1, 0, 1, 1]),
        "products": ([0.47, 0.6], [1, 0]),
    }
    at_half = bench_quality.accuracies(scored, 0.5)
    at_tuned = bench_quality.accuracies(scored, 0.44)
    assert at_half == {
        "sample_test": 0.5,
        "films": 0.5,
        "products": 0.0,
        "heldout_mean": 0.25,
    }
    assert at_tuned["films"] == 1.0 and at_tuned["products"] == 0.5
    assert at_tuned["heldout_mean"] == 0.75


def test_threshold_flag_replaces_the_served_one() -> None:
    assert bench_quality.label_thresholds(None) == {"0.5": 0.5}
    assert bench_quality.label_thresholds(0.4428) == {"0.5": 0.5, "0.4428": 0.4428}
    assert bench_quality.label_thresholds(0.4428, 0.659) == {"0.5": 0.5, "0.659": 0.659}
    assert bench_quality.label_thresholds(None, 0.659) == {"0.5": 0.5, "0.659": 0.659}
