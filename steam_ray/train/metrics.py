"""Validation metrics, computed over every rank's predictions (not rank 0's shard alone)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

#: Names a ``checkpoint_metric`` may use (plus per-class ones below).
METRIC_NAMES: tuple[str, ...] = (
    "loss",
    "accuracy",
    "macro_f1",
    "roc_auc",
    "precision_0",
    "recall_0",
    "f1_0",
    "precision_1",
    "recall_1",
    "f1_1",
)


def classification_metrics(
    probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, loss_sum: float
) -> dict[str, float]:
    """Metrics from positive-class probabilities, true labels and the summed (per-row) loss.

    ROC-AUC is NaN when only one class is present (it is undefined, not 0.5).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan, "macro_f1": math.nan, "roc_auc": math.nan}
    pred = (p >= 0.5).astype(np.int64)
    prec, rec, f1, _ = precision_recall_fscore_support(
        y, pred, labels=[0, 1], average=None, zero_division=0
    )
    out: dict[str, float] = {
        "loss": float(loss_sum / n),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(np.mean(f1)),
        "roc_auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan,
        "num_examples": float(n),
    }
    for c in (0, 1):
        out[f"precision_{c}"] = float(prec[c])
        out[f"recall_{c}"] = float(rec[c])
        out[f"f1_{c}"] = float(f1[c])
    return out


def merge_parts(parts: Sequence[tuple[list[float], list[int], float]]) -> dict[str, float]:
    """Combine per-rank (probs, labels, loss_sum) parts into global metrics."""
    probs: list[float] = []
    labels: list[int] = []
    loss_sum = 0.0
    for p, y, loss in parts:
        probs.extend(p)
        labels.extend(y)
        loss_sum += loss
    return classification_metrics(probs, labels, loss_sum)


def gather_metrics(probs: list[float], labels: list[int], loss_sum: float) -> dict[str, float]:
    """All-gather every rank's predictions, then compute the same metrics on every rank."""
    from steam_ray.train.distributed import gather_objects

    # Objects go over the host (gloo) group: NCCL cannot gather CPU objects.
    parts: list[Any] = gather_objects((probs, labels, loss_sum))
    return merge_parts(parts)


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf are not JSON: write them as null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }
