"""Drift statistics: is the current window of traffic like the reference (the training data)?

Pure numpy/scipy/scikit-learn, no Ray and no I/O: ``steam_ray.monitor`` loads the windows and
writes the report. Each test returns a ``Check`` (statistic, threshold, verdict) so drift.json
says why it decided what it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

#: PSI's bins never get exactly 0 mass (log(0)); 1e-4 is the usual floor.
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Check:
    name: str
    statistic: float
    threshold: float
    drift: bool
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins (ties merged)."""
    ref, cur = np.asarray(reference, float), np.asarray(current, float)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("PSI needs a non-empty reference and current window")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # Bin i holds values in (edges[i-1], edges[i]]; the outer bins are open-ended.
    ref_p = np.bincount(np.searchsorted(edges, ref), minlength=edges.size + 1) / ref.size
    cur_p = np.bincount(np.searchsorted(edges, cur), minlength=edges.size + 1) / cur.size
    ref_p, cur_p = np.maximum(ref_p, _PSI_FLOOR), np.maximum(cur_p, _PSI_FLOOR)
    return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))


def distribution_check(
    name: str, reference: np.ndarray, current: np.ndarray, psi_threshold: float, alpha: float
) -> Check:
    """PSI decides; the KS test and Wasserstein distance are reported beside it.

    Not KS alone: on tens of thousands of rows its p-value flags shifts too small to matter.
    """
    value = psi(reference, current)
    ks = stats.ks_2samp(reference, current)
    detail = {
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "ks_alpha": alpha,
        "wasserstein": float(stats.wasserstein_distance(reference, current)),
        "reference_mean": float(np.mean(reference)),
        "current_mean": float(np.mean(current)),
        "n_reference": len(reference),
        "n_current": len(current),
    }
    return Check(f"{name}_psi", value, psi_threshold, value > psi_threshold, detail)


def two_proportion(ref_hits: int, ref_n: int, cur_hits: int, cur_n: int) -> tuple[float, float]:
    """Two-sided z-test for equal proportions (pooled variance): (z, p-value)."""
    if ref_n <= 0 or cur_n <= 0:
        raise ValueError("a proportion needs at least one row on each side")
    pooled = (ref_hits + cur_hits) / (ref_n + cur_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / ref_n + 1 / cur_n))
    if se == 0:
        return 0.0, 1.0
    z = (cur_hits / cur_n - ref_hits / ref_n) / se
    return float(z), float(2 * stats.norm.sf(abs(z)))


def rate_check(ref_labels: np.ndarray, cur_labels: np.ndarray, alpha: float) -> Check:
    ref, cur = np.asarray(ref_labels, bool), np.asarray(cur_labels, bool)
    z, p = two_proportion(int(ref.sum()), ref.size, int(cur.sum()), cur.size)
    detail = {"z": z, "reference_rate": float(ref.mean()), "current_rate": float(cur.mean())}
    detail.update(n_reference=int(ref.size), n_current=int(cur.size))
    return Check("predicted_positive_rate", p, alpha, p < alpha, detail)


def domain_auc(
    reference: Sequence[str], current: Sequence[str], *, folds: int = 5, seed: int = 0
) -> float:
    """Cross-validated ROC-AUC of a TF-IDF + logistic regression telling current texts from
    reference ones: ~0.5 when they are alike, -> 1.0 as they become separable."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    texts = list(reference) + list(current)
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    if min(len(reference), len(current)) < folds:
        raise ValueError(f"the domain classifier needs at least {folds} texts on each side")
    # Words in >= 1% of the texts only: new games (movies) bring their own names, which
    # tell any two group-disjoint splits apart; a new domain shows in the common words.
    model = make_pipeline(
        TfidfVectorizer(min_df=0.01, sublinear_tf=True),
        LogisticRegression(max_iter=1000, class_weight="balanced"),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(model, texts, y, cv=cv, scoring="roc_auc")))


def domain_check(
    reference: Sequence[str], current: Sequence[str], threshold: float, max_texts: int, seed: int
) -> Check:
    rng = np.random.default_rng(seed)
    ref = _sample(reference, max_texts, rng)
    cur = _sample(current, max_texts, rng)
    auc = domain_auc(ref, cur, seed=seed)
    detail = {"n_reference": len(ref), "n_current": len(cur)}
    return Check("text_domain_classifier_auc", auc, threshold, auc > threshold, detail)


def _sample(texts: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    return [texts[i] for i in sorted(rng.choice(len(texts), n, replace=False))]


def expected_accuracy(
    ref_scores: np.ndarray, ref_labels: np.ndarray, cur_scores: np.ndarray, threshold: float
) -> dict[str, float]:
    """Label-free accuracy estimate (in the spirit of NannyML's CBPE): calibrate scores on the
    labelled reference (isotonic), then the expected accuracy of the current window is the mean
    probability that each thresholded prediction is right."""
    from sklearn.isotonic import IsotonicRegression

    ref_scores, cur_scores = np.asarray(ref_scores, float), np.asarray(cur_scores, float)
    labels = np.asarray(ref_labels, int)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(ref_scores, labels)

    def estimate(scores: np.ndarray) -> float:
        p = iso.predict(scores)
        return float(np.mean(np.where(scores >= threshold, p, 1 - p)))

    actual = float(np.mean((ref_scores >= threshold) == labels.astype(bool)))
    return {
        "reference_accuracy": actual,
        "reference_expected_accuracy": estimate(ref_scores),
        "current_expected_accuracy": estimate(cur_scores),
    }
