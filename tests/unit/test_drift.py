"""steam_ray.drift: each statistic against an answer worked out by hand or by another library."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from steam_ray import drift


def test_psi_matches_the_hand_computed_value() -> None:
    ref = np.r_[np.ones(50), 2 * np.ones(50)]
    cur = np.r_[np.ones(80), 2 * np.ones(20)]
    expected = 0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5)
    assert drift.psi(ref, cur) == pytest.approx(expected, rel=1e-9)
    assert drift.psi(ref, ref) == 0.0


def test_psi_small_for_same_distribution_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    assert drift.psi(ref, rng.normal(size=5000)) < 0.02
    assert drift.psi(ref, rng.normal(loc=1.0, size=5000)) > 0.25


def test_distribution_check_decides_by_psi_and_reports_ks() -> None:
    rng = np.random.default_rng(1)
    ref = rng.poisson(20, 3000).astype(float)
    same = drift.distribution_check("tokens", ref, rng.poisson(20, 3000), 0.2, 0.01)
    longer = drift.distribution_check("tokens", ref, rng.poisson(35, 3000), 0.2, 0.01)
    assert not same.drift and longer.drift and longer.name == "tokens_psi"
    assert longer.detail["ks_pvalue"] < 1e-10 < same.detail["ks_pvalue"]
    assert longer.detail["wasserstein"] == pytest.approx(15, abs=1.0)


def test_two_proportion_agrees_with_the_chi_square_test() -> None:
    z, p = drift.two_proportion(50, 100, 65, 100)
    chi2, p_chi, _, _ = chi2_contingency([[50, 50], [65, 35]], correction=False)
    assert z**2 == pytest.approx(chi2) and p == pytest.approx(p_chi)
    assert z > 0
    assert drift.two_proportion(0, 10, 0, 10) == (0.0, 1.0)
    with pytest.raises(ValueError):
        drift.two_proportion(1, 0, 1, 1)


def test_rate_check_flags_a_moved_positive_rate() -> None:
    rng = np.random.default_rng(2)
    ref = rng.random(2000) < 0.82
    assert not drift.rate_check(ref, rng.random(2000) < 0.82, 0.01).drift
    moved = drift.rate_check(ref, rng.random(2000) < 0.60, 0.01)
    assert moved.drift and moved.detail["current_rate"] == pytest.approx(0.60, abs=0.03)


def _texts(words: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, rng.integers(5, 15))) for _ in range(n)]


FILM = [
    "the",
    "film",
    "plot",
    "actor",
    "director",
    "scene",
    "acting",
    "cinema",
    "story",
    "screenplay",
    "ending",
]
FOOD = [
    "the",
    "waiter",
    "menu",
    "dish",
    "pasta",
    "table",
    "dessert",
    "chef",
    "service",
    "pizza",
    "delicious",
]


def test_domain_classifier_separates_domains_not_samples_of_one() -> None:
    same = drift.domain_auc(_texts(FILM, 200, 0), _texts(FILM, 200, 1))
    other = drift.domain_auc(_texts(FILM, 200, 0), _texts(FOOD, 200, 1))
    assert same < 0.65 and other > 0.95
    with pytest.raises(ValueError, match="at least 5"):
        drift.domain_auc(["a"] * 3, ["b"] * 3)


def test_domain_check_samples_at_most_max_texts() -> None:
    check = drift.domain_check(_texts(FILM, 900, 0), _texts(FOOD, 400, 1), 0.7, 300, seed=0)
    assert check.drift and check.detail == {"n_reference": 300, "n_current": 300}


def test_expected_accuracy_tracks_real_accuracy_without_labels() -> None:
    rng = np.random.default_rng(3)
    # A calibrated model: P(label=1 | score) = score.
    ref_scores = rng.beta(0.6, 0.6, 4000)
    ref_labels = (rng.random(4000) < ref_scores).astype(int)
    est = drift.expected_accuracy(ref_scores, ref_labels, rng.beta(0.6, 0.6, 4000), 0.5)
    assert est["current_expected_accuracy"] == pytest.approx(est["reference_accuracy"], abs=0.03)
    # Traffic the model is unsure of (scores near 0.5): lower expected accuracy, and the true
    # accuracy of such traffic (drawn the same way) is lower too.
    unsure = rng.beta(8, 8, 4000)
    truth = float(np.mean((unsure >= 0.5) == (rng.random(4000) < unsure)))
    low = drift.expected_accuracy(ref_scores, ref_labels, unsure, 0.5)
    assert low["current_expected_accuracy"] < est["current_expected_accuracy"] - 0.1
    assert low["current_expected_accuracy"] == pytest.approx(truth, abs=0.05)
