"""The evaluation's metrics on arrays with answers known independently: hand-counted cases and
scikit-learn/scipy on the same arrays (no Ray here)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    roc_auc_score,
)

from steam_ray.evaluate import (
    MAX_DROP_POINTS,
    MIN_AGREEMENT,
    backend_verdict,
    bootstrap_intervals,
    calibration,
    length_buckets,
    score_metrics,
    slices,
    threshold_metrics,
    tune_threshold,
    wilson_interval,
    worst_slices,
)
from steam_ray.serve.backends import label_of
from steam_ray.serve.source import ModelSource


def noisy_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels ~70% positive and scores that separate them imperfectly (ties included)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.7).astype(np.int64)
    p = np.clip(0.25 + 0.4 * y + rng.normal(0, 0.22, n), 0, 1)
    p[:20] = np.round(p[:20], 1)  # some exact ties
    return y, p


def test_threshold_metrics_hand_counted() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.6, 0.3, 0.55, 0.8, 0.9])
    m = threshold_metrics(y, p, 0.5)
    # predicted: 0 0 1 0 1 1 1 -> tn 2, fp 1, fn 1, tp 3
    assert m["confusion_matrix"] == [[2, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["per_class"]["positive"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["negative"]["recall"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 * 2 / (2 * 2 + 1 + 1) + 2 * 3 / (2 * 3 + 1 + 1)) / 2)
    # a score equal to the threshold is positive
    assert threshold_metrics(y, p, 0.55)["confusion_matrix"] == [[2, 1], [1, 3]]
    assert threshold_metrics(y, p, 0.56)["confusion_matrix"] == [[2, 1], [2, 2]]


def test_threshold_metrics_and_scores_match_sklearn() -> None:
    y, p = noisy_scores(500, 1)
    for t in (0.3, 0.5, 0.71):
        m = threshold_metrics(y, p, t)
        pred = (p >= t).astype(int)
        assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    s = score_metrics(y, p, 15)
    assert s["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert s["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert s["brier"] == pytest.approx(brier_score_loss(y, p))
    one_class = score_metrics(np.ones(5, dtype=np.int64), np.linspace(0.1, 0.9, 5), 15)
    assert one_class["roc_auc"] is None and one_class["pr_auc"] is None


def test_ece_matches_calibration_curve() -> None:
    y, p = noisy_scores(800, 2)
    ece, table = calibration(y, p, 15)
    true, pred = calibration_curve(y, p, n_bins=15, strategy="uniform")
    edges = np.linspace(0, 1, 16)  # bins (low, high], the first one [0, high]
    counts = np.array([np.sum((p > lo) & (p <= hi)) for lo, hi in itertools.pairwise(edges)])
    counts[0] += np.sum(p == 0)
    full = counts[counts > 0]
    assert ece == pytest.approx(float(np.sum(full / len(p) * np.abs(true - pred))))
    assert [b["count"] for b in table] == counts.tolist()
    assert [b["positive_rate"] for b in table if b["count"]] == pytest.approx(true.tolist())


def test_ece_hand_counted() -> None:
    # All rows in one bin: mean score 0.1, observed positive rate 0.5 -> ECE 0.4.
    ece, _ = calibration(np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0]), np.full(10, 0.1), 15)
    assert ece == pytest.approx(0.4)
    # Perfectly calibrated: 0.25 with 1/4 positive, 0.75 with 3/4 positive.
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert calibration(y, p, 15)[0] == pytest.approx(0.0)
    # An inner edge goes to the lower bin, like calibration_curve; 0 to the first bin.
    _, table = calibration(np.array([1, 1, 0]), np.array([0.5, 1.0, 0.0]), 2)
    assert [b["count"] for b in table] == [2, 1]


def test_tune_threshold_hand_counted() -> None:
    y = np.array([0, 0, 1, 1])
    assert tune_threshold(y, np.array([0.1, 0.6, 0.7, 0.9])) == pytest.approx(0.65)
    # Two cuts tie on macro-F1 (0.7333): 0.8 and 0.225; the one nearer 0.5 wins.
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.7, 0.35, 0.1])
    assert f1_score(y, p >= 0.8, average="macro") == pytest.approx(
        f1_score(y, p >= 0.225, average="macro")
    )
    assert tune_threshold(y, p) == pytest.approx(0.225)
    # Nothing to tune with one class.
    assert tune_threshold(np.ones(4, dtype=np.int64), np.array([0.1, 0.2, 0.3, 0.4])) == 0.5


def test_tune_threshold_is_the_best_cut_by_brute_force() -> None:
    y, p = noisy_scores(400, 3)
    p = np.round(p, 2)  # many ties; at most 101 distinct scores to brute-force
    t = tune_threshold(y, p)
    values = np.unique(p)
    candidates = np.r_[(values[1:] + values[:-1]) / 2, values[0] / 2, 1.01]
    brute = max(f1_score(y, p >= c, average="macro") for c in candidates)
    assert f1_score(y, p >= t, average="macro") == pytest.approx(brute)
    assert f1_score(y, p >= t, average="macro") >= f1_score(y, p >= 0.5, average="macro")


def test_bootstrap_intervals() -> None:
    y, p = noisy_scores(300, 4)
    a = bootstrap_intervals(y, p, 0.5, resamples=1000, seed=7)
    assert a == bootstrap_intervals(y, p, 0.5, resamples=1000, seed=7)  # seeded
    pred = (p >= 0.5).astype(int)
    acc, macro = accuracy_score(y, pred), f1_score(y, pred, average="macro")
    assert a["accuracy"][0] < acc < a["accuracy"][1]
    assert a["macro_f1"][0] < macro < a["macro_f1"][1]
    # The same percentiles from resampled rows (other draws): per-class precision and recall
    # of each resample, F1 = 2PR / (P + R), checked against sklearn on a few resamples.
    idx = np.random.default_rng(0).integers(0, len(y), size=(4000, len(y)))
    ys, ps = y[idx], pred[idx]
    naive_acc = (ys == ps).mean(axis=1)
    f1s = []
    for c in (0, 1):
        tp = ((ps == c) & (ys == c)).sum(axis=1)
        precision, recall = tp / (ps == c).sum(axis=1), tp / (ys == c).sum(axis=1)
        f1s.append(2 * precision * recall / (precision + recall))
    naive_f1 = (f1s[0] + f1s[1]) / 2
    for k in range(5):
        assert naive_f1[k] == pytest.approx(f1_score(ys[k], ps[k], average="macro"))
    assert a["accuracy"] == pytest.approx(np.percentile(naive_acc, [2.5, 97.5]), abs=0.01)
    assert a["macro_f1"] == pytest.approx(np.percentile(naive_f1, [2.5, 97.5]), abs=0.012)
    # Every row right: every resample is right.
    perfect = bootstrap_intervals(y, y.astype(float), 0.5, resamples=200, seed=1)
    assert perfect["accuracy"] == [1.0, 1.0] and perfect["macro_f1"] == [1.0, 1.0]


def test_backend_verdict_and_paired_interval() -> None:
    y, ref = noisy_scores(2000, 5)
    rng = np.random.default_rng(3)
    flip = rng.random(len(y)) < 0.01  # 1% of labels flipped by "quantisation"
    cand = np.where(flip, 1.0 - ref, ref)
    v = backend_verdict(y, ref, cand, resamples=4000, seed=1)
    ref_ok, ok = (ref >= 0.5) == y, (cand >= 0.5) == y
    assert v["n"] == 2000 and v["agreement"] == pytest.approx(1 - flip.mean())
    assert v["delta_points"] == pytest.approx(100 * (ok.mean() - ref_ok.mean()))
    # The same interval from resampled rows (paired: one index draw for both backends).
    idx = rng.integers(0, len(y), size=(4000, len(y)))
    naive = 100 * (ok[idx].mean(axis=1) - ref_ok[idx].mean(axis=1))
    assert v["delta_points_95ci"] == pytest.approx(np.percentile(naive, [2.5, 97.5]), abs=0.06)
    low, high = v["delta_points_95ci"]
    assert low <= v["delta_points"] <= high
    assert v["eligible"] == (
        v["delta_points"] >= -MAX_DROP_POINTS and v["agreement"] >= MIN_AGREEMENT
    )
    # Identical scores: no difference, full agreement, eligible; 3% flipped: not eligible.
    same = backend_verdict(y, ref, ref.copy(), resamples=200, seed=1)
    assert same["delta_points_95ci"] == [0.0, 0.0] and same["eligible"]
    worse = np.where(rng.random(len(y)) < 0.03, 1.0 - ref, ref)
    assert not backend_verdict(y, ref, worse, resamples=200, seed=1)["eligible"]


def test_wilson_interval() -> None:
    low, high = wilson_interval(8, 10)
    z, n, phat = 1.959963984540054, 10, 0.8  # the closed form, computed here
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_length_buckets() -> None:
    assert length_buckets(256) == [16, 32, 64, 128, 256]
    assert length_buckets(100) == [16, 32, 64, 100]
    assert length_buckets(8) == [8]


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["slice"]: r for r in rows}


def test_slices_hand_counted() -> None:
    y = np.array([1, 1, 0, 1, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.1, 0.8, 0.7, 0.6, 0.4])  # at 0.5: right, wrong, right, right,
    # wrong, right, right
    groups = np.array(["a", "a", "a", "b", "b", "c", "c"])
    tokens = np.array([5, 20, 64, 64, 10, 3, 40])
    out = slices(y, p, 0.5, groups=groups, num_tokens=tokens, max_length=64, top_groups=2)
    g = _by_name(out["group"])
    assert set(g) == {"a", "b"}  # top 2 by count (a: 3 rows; b and c tie at 2, b sorts first)
    assert (g["a"]["n"], g["a"]["errors"]) == (3, 1) and (g["b"]["n"], g["b"]["errors"]) == (2, 1)
    assert [r["slice"] for r in out["group"]] == ["b", "a"]  # worst first
    assert g["a"]["ci_low"] < 2 / 3 < g["a"]["ci_high"]
    length = _by_name(out["length"])
    assert length["0-16 tokens"]["n"] == 3  # 5, 10, 3
    assert length["17-32 tokens"]["n"] == 1 and length["33-64 tokens"]["n"] == 3
    trunc = _by_name(out["truncated"])
    assert trunc["truncated (>= 64)"]["n"] == 2 and trunc["truncated (>= 64)"]["accuracy"] == 1.0
    assert trunc["not truncated"]["n"] == 5 and trunc["not truncated"]["errors"] == 2
    worst = worst_slices(out)
    assert [r["accuracy"] for r in worst] == sorted(r["accuracy"] for r in worst)
    assert (worst[0]["slice"], worst[0]["accuracy"]) == ("17-32 tokens", 0.0)  # its one row


def test_label_rule_follows_the_threshold() -> None:
    assert label_of(0.6) == "positive"
    assert label_of(0.6, 0.7) == "negative" and label_of(0.7, 0.7) == "positive"
    # A source dict from before thresholds existed still loads, with 0.5.
    old = {"path": "/x", "ref": "/x", "name": "m", "version": None, "metrics": {}, "lineage": {}}
    assert ModelSource.from_dict(old).threshold == 0.5


def test_registry_attach_evaluation_and_show(tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from steam_ray.cli import app
    from steam_ray.errors import SteamRayError
    from steam_ray.registry import Registry, register_checkpoint

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "metrics.json").write_text(json.dumps({"macro_f1": 0.7}))
    root = str(tmp_path / "registry")
    kw: dict[str, Any] = {"metric": "macro_f1", "mode": "max", "config": {}, "lineage": {}}
    version = register_checkpoint(root, "m", str(ckpt), **kw).version.version
    reg = Registry(root)
    pointer = reg.best_pointer("m")
    assert reg.get("m", version).evaluation == {}
    mv = reg.attach_evaluation("m", version, {"threshold": 0.42, "split": "test"}, "# card\n")
    assert mv.evaluation["threshold"] == 0.42 and "attached_at" in mv.evaluation
    version_dir = tmp_path / "registry" / "m" / version
    assert (version_dir / "README.md").read_text() == "# card\n"
    assert not list(version_dir.glob(".*"))  # no temporary files left
    assert reg.best_pointer("m") == pointer  # the pointer does not move
    with pytest.raises(SteamRayError, match="not found"):
        reg.attach_evaluation("m", "no-such-version", {"threshold": 0.5}, "")
    with pytest.raises(SteamRayError, match="no finite threshold"):
        reg.attach_evaluation("m", version, {"threshold": float("nan")}, "")
    shown = CliRunner().invoke(app, ["registry", "show", f"m:{version}", "--root", root])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["evaluation"]["threshold"] == 0.42
