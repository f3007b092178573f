"""``steam-ray evaluate``: score a prepared split with Ray Data and report how good the model is.

    resolve the checkpoint (path, run dir, ``best``, ``NAME:VERSION``)
    score the val split and the requested split in one Ray Data pass  -> ScoreBatch actor pool
    tune the decision threshold on val (macro-F1); metrics at it and at 0.5
    bootstrap intervals, calibration, slices (top groups, token length, truncation)
    write metrics.json, report.html + PNGs, a model card (README.md) aside, then swap them in
    attach the evaluation to the registry version (``serve`` then labels with its threshold)

Definitions (also in the report):

* The decision rule is ``positive iff score >= threshold``; ``score`` = P(positive).
* ECE: the scores are cut into ``ece_bins`` (15) equal-width bins over [0, 1] (a score on an
  inner edge goes to the lower bin, as ``sklearn.calibration.calibration_curve`` bins);
  ECE = sum over bins of (rows in bin / rows) * |observed positive rate - mean score|. It is
  the calibration of P(positive) itself (what the API returns), not of the top-label confidence.
* Bootstrap: accuracy and macro-F1 depend on a resample only through its confusion-matrix
  counts, and the counts of N rows drawn with replacement are Multinomial(N, cell shares):
  each of the ``bootstrap_resamples`` resamples is one multinomial draw (exact, O(resamples)
  memory, seeded); the interval is the 2.5/97.5 percentiles.
* Slice intervals: Wilson score intervals for the slice's accuracy (scipy), fine for small n.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from steam_ray import storage
from steam_ray.config import EvaluateConfig
from steam_ray.data import manifest as mf
from steam_ray.errors import ConfigError, DataError
from steam_ray.evaluate_report import CARD_FILE, PLOTS, REPORT_FILE, model_card, write_report
from steam_ray.serve.source import ModelSource, resolve_source

METRICS_FILE = "metrics.json"
#: Everything an evaluation writes into OUTPUT (other files there are never touched).
OUTPUT_FILES: tuple[str, ...] = (METRICS_FILE, REPORT_FILE, CARD_FILE, *PLOTS.values())
TUNE_SPLIT = "val"
DEFAULT_THRESHOLD = 0.5
_COLUMNS = ("label", "group", "num_tokens", "score", "split")


# -- metrics on arrays (no Ray) --------------------------------------------------------------
def threshold_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Metrics of the rule ``positive iff p >= threshold``."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    pred = (p >= threshold).astype(np.int64)
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=[0, 1], average=None, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(prec[c]),
            "recall": float(rec[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c, name in enumerate(("negative", "positive"))
    }
    return {
        "threshold": float(threshold),
        "n": len(y),
        "accuracy": float(accuracy_score(y, pred)) if len(y) else math.nan,
        "macro_f1": float(np.mean(f1)),
        "per_class": per_class,
        # rows: true negative, true positive; columns: predicted negative, positive
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "predicted_positive_rate": float(pred.mean()) if len(y) else math.nan,
    }


def calibration(y: np.ndarray, p: np.ndarray, bins: int) -> tuple[float, list[dict[str, Any]]]:
    """(ECE, per-bin table) over ``bins`` equal-width bins of P(positive); see the module doc."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.searchsorted(edges[1:-1], p)  # calibration_curve's binning: (low, high]
    count = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=bins)
    ece = float(np.abs(sum_y - sum_p).sum() / len(p)) if len(p) else math.nan
    table = [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "count": int(count[b]),
            "mean_score": float(sum_p[b] / count[b]) if count[b] else None,
            "positive_rate": float(sum_y[b] / count[b]) if count[b] else None,
        }
        for b in range(bins)
    ]
    return ece, table


def score_metrics(y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, Any]:
    """Threshold-free metrics; ROC-AUC and PR-AUC are None when one class is absent."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    both = len(np.unique(y)) == 2
    ece, table = calibration(y, p, bins)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p, pos_label=1)) if len(y) else None,
        "ece": ece,
        "ece_bins": bins,
        "reliability": table,
    }


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2tp / (2tp + fp + fn), 0 where undefined (sklearn's ``zero_division=0``)."""
    den = 2 * tp + fp + fn
    out: np.ndarray = np.divide(2.0 * tp, den, out=np.zeros(np.shape(den)), where=den > 0)
    return out


def _macro_f1(tn: np.ndarray, fp: np.ndarray, fn: np.ndarray, tp: np.ndarray) -> np.ndarray:
    out: np.ndarray = (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2
    return out


def tune_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising macro-F1 of ``positive iff p >= t`` on (y, p).

    Every distinct cut of the sorted scores is tried at once (cumulative counts); each cut's
    threshold is the midpoint between the scores either side of it. Ties in macro-F1 go to the
    threshold nearest 0.5. With one class (or no rows) nothing can be tuned: 0.5.
    """
    if len(y) == 0 or len(np.unique(y)) < 2:
        return DEFAULT_THRESHOLD
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order].astype(np.int64)
    ends = np.r_[ps[1:] != ps[:-1], True]  # the last row of each run of equal scores
    tp = np.r_[0, np.cumsum(ys)[ends]]  # cut j: the j highest distinct scores are positive
    fp = np.r_[0, np.cumsum(1 - ys)[ends]]
    pos, neg = int(ys.sum()), len(ys) - int(ys.sum())
    macro = _macro_f1(neg - fp, fp, pos - tp, tp)
    distinct = ps[ends]
    # Cut j > 0 sits between the j-th distinct score and the next lower one (0 after the
    # last); cut 0 (nothing positive) just above the highest score.
    lower = np.r_[distinct[1:], 0.0]
    mids = np.maximum((distinct + lower) / 2, np.nextafter(lower, np.inf))
    cuts = np.r_[np.nextafter(distinct[0], np.inf), mids]
    best = np.flatnonzero(macro >= macro.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def bootstrap_intervals(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals of accuracy and macro-F1 (multinomial, module doc)."""
    pred = p >= threshold
    truth = y.astype(bool)
    cells = np.array(
        [np.sum(~truth & ~pred), np.sum(~truth & pred), np.sum(truth & ~pred), np.sum(truth & pred)]
    )
    n = int(cells.sum())
    out: dict[str, Any] = {"resamples": resamples, "seed": seed, "level": level}
    if n == 0:
        return {**out, "accuracy": [None, None], "macro_f1": [None, None]}
    draws = np.random.default_rng(seed).multinomial(n, cells / n, size=resamples)
    tn, fp, fn, tp = draws.T
    q = [50 * (1 - level), 50 * (1 + level)]
    acc = np.percentile((tn + tp) / n, q)
    macro = np.percentile(_macro_f1(tn, fp, fn, tp), q)
    return {**out, "accuracy": acc.tolist(), "macro_f1": macro.tolist()}


#: The rule a faster backend must meet to replace PyTorch fp32 as the CPU default (measured by
#: benchmarks/bench_backends.py on val + test together): accuracy at most this many points below
#: fp32's, and the same label as fp32 on at least this share of reviews.
MAX_DROP_POINTS = 0.5
MIN_AGREEMENT = 0.985


def paired_accuracy_delta(
    y: np.ndarray, p_ref: np.ndarray, p: np.ndarray, *, resamples: int, seed: int
) -> list[float]:
    """95% paired bootstrap interval of accuracy(p) - accuracy(p_ref), in points. A resample's
    difference depends only on the counts of (ref right?, candidate right?), so each resample is
    one multinomial draw over those 4 cells, as in ``bootstrap_intervals``."""
    ref_ok, ok = (p_ref >= 0.5) == y.astype(bool), (p >= 0.5) == y.astype(bool)
    cells = np.array([np.sum(ref_ok & ~ok), np.sum(~ref_ok & ok)], dtype=float)
    n = len(y)
    rest = n - cells.sum()  # rows both got right or both got wrong: no effect on the delta
    draws = np.random.default_rng(seed).multinomial(n, [*(cells / n), rest / n], size=resamples)
    delta = 100.0 * (draws[:, 1] - draws[:, 0]) / n
    return [float(x) for x in np.percentile(delta, [2.5, 97.5])]


def backend_verdict(
    y: np.ndarray, p_ref: np.ndarray, p: np.ndarray, *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """A candidate backend's scores against fp32's on the same reviews, and the rule's verdict."""
    accuracy = float(np.mean((p >= 0.5) == y.astype(bool)))
    ref_accuracy = float(np.mean((p_ref >= 0.5) == y.astype(bool)))
    delta = 100.0 * (accuracy - ref_accuracy)
    agreement = float(np.mean((p >= 0.5) == (p_ref >= 0.5)))
    return {
        "n": len(y),
        "accuracy": accuracy,
        "delta_points": delta,
        "delta_points_95ci": paired_accuracy_delta(y, p_ref, p, resamples=resamples, seed=seed),
        "agreement": agreement,
        "eligible": delta >= -MAX_DROP_POINTS and agreement >= MIN_AGREEMENT,
    }


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _slice_row(kind: str, name: str, y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    n, correct = len(y), int(np.sum(y == pred))
    low, high = wilson_interval(correct, n)
    return {
        "kind": kind,
        "slice": name,
        "n": n,
        "accuracy": correct / n,
        "ci_low": low,
        "ci_high": high,
        "errors": n - correct,
        "positive_rate": float(np.mean(y)),
        "predicted_positive_rate": float(np.mean(pred)),
    }


def length_buckets(max_length: int) -> list[int]:
    """Upper edges of the token-length buckets: 16, 32, 64, ... below max_length, then it."""
    edges = [e for e in (2**k for k in range(4, 20)) if e < max_length]
    return [*edges, max_length]


def slices(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    *,
    groups: np.ndarray,
    num_tokens: np.ndarray,
    max_length: int,
    top_groups: int = 10,
) -> dict[str, list[dict[str, Any]]]:
    """Accuracy per slice, each kind's slices worst first: the ``top_groups`` most frequent
    groups, token-length buckets, truncated (num_tokens >= max_length) or not."""
    pred = (p >= threshold).astype(np.int64)
    keys: dict[str, list[tuple[str, np.ndarray]]] = {"group": [], "length": [], "truncated": []}
    names, counts = np.unique(groups.astype(str), return_counts=True)
    for i in sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[:top_groups]:
        keys["group"].append((str(names[i]), groups.astype(str) == names[i]))
    edges = length_buckets(max_length)
    bucket = np.searchsorted(edges, num_tokens, side="left")
    for b, high in enumerate([*edges, math.inf]):
        low = edges[b - 1] + 1 if b else 0
        label = f"{low}-{high:g} tokens" if high != math.inf else f"> {max_length} tokens"
        keys["length"].append((label, bucket == b))
    truncated = num_tokens >= max_length
    keys["truncated"] = [(f"truncated (>= {max_length})", truncated), ("not truncated", ~truncated)]
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, masks in keys.items():
        rows = [_slice_row(kind, name, y[m], pred[m]) for name, m in masks if m.any()]
        out[kind] = sorted(rows, key=lambda r: (r["accuracy"], -r["n"]))
    return out


def worst_slices(by_kind: dict[str, list[dict[str, Any]]], k: int = 10) -> list[dict[str, Any]]:
    every = [r for rows in by_kind.values() for r in rows]
    return sorted(every, key=lambda r: (r["accuracy"], -r["n"]))[:k]


def split_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float, cfg: EvaluateConfig
) -> dict[str, Any]:
    """Everything about one split: at the tuned threshold, at 0.5, threshold-free, intervals."""
    boot = {"resamples": cfg.bootstrap_resamples, "seed": cfg.seed}
    return {
        "rows": len(y),
        "positive": int(np.sum(y)),
        "at_threshold": threshold_metrics(y, p, threshold),
        "at_0.5": threshold_metrics(y, p, DEFAULT_THRESHOLD),
        "bootstrap": bootstrap_intervals(y, p, threshold, **boot),
        "bootstrap_at_0.5": bootstrap_intervals(y, p, DEFAULT_THRESHOLD, **boot),
        **score_metrics(y, p, cfg.ece_bins),
    }


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The flat headline of ``split_metrics``: values at the tuned threshold."""
    at = metrics["at_threshold"]
    return {
        "rows": metrics["rows"],
        "threshold": at["threshold"],
        "accuracy": at["accuracy"],
        "accuracy_95ci": metrics["bootstrap"]["accuracy"],
        "macro_f1": at["macro_f1"],
        "macro_f1_95ci": metrics["bootstrap"]["macro_f1"],
        "accuracy_at_0.5": metrics["at_0.5"]["accuracy"],
        "macro_f1_at_0.5": metrics["at_0.5"]["macro_f1"],
        **{k: metrics[k] for k in ("roc_auc", "pr_auc", "brier", "ece")},
    }


# -- scoring on Ray Data ---------------------------------------------------------------------
def _progress(start: float, message: str) -> None:
    print(f"evaluate [{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)


def _read_split(data: str, split: str) -> Any:
    """The split's Parquet shards as a Dataset of (label, group, input_ids, num_tokens, split)."""
    import ray

    where, fs = storage.for_ray(mf.split_dir(data, split))
    ds = ray.data.read_parquet(where, filesystem=fs)
    names = set(ds.schema().names)
    missing = {"label", "group", "input_ids"} - names
    if missing:
        raise DataError(f"{mf.split_dir(data, split)}: Parquet shards lack {sorted(missing)}")
    ds = ds.select_columns([c for c in ("label", "group", "input_ids", "num_tokens") if c in names])

    def tag(batch: pa.Table) -> pa.Table:
        if "num_tokens" not in batch.column_names:  # older outputs: count the ids
            lengths = pc.list_value_length(batch.column("input_ids")).cast(pa.int32())
            batch = batch.append_column("num_tokens", lengths)
        return batch.append_column("split", pa.array([split] * len(batch), pa.string()))

    return ds.map_batches(tag, batch_format="pyarrow", batch_size=None)


def score_splits(cfg: EvaluateConfig, checkpoint: str, splits: list[str]) -> pa.Table:
    """(label, group, num_tokens, score, split) of every row of ``splits``, one Ray pass."""
    from steam_ray import cluster
    from steam_ray.predict import score_dataset

    cluster.connect()
    datasets = [_read_split(cfg.data, s) for s in splits]
    ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
    scored = score_dataset(
        ds,
        checkpoint,
        backend=cfg.backend,
        use_gpu=cfg.use_gpu,
        batch_size=cfg.batch_size,
        concurrency=cfg.actors,
    ).select_columns(list(_COLUMNS))
    parts = list(scored.iter_batches(batch_format="pyarrow", batch_size=None))
    if not parts:
        return pa.table({c: pa.array([], t) for c, t in _schema().items()})
    return pa.concat_tables(parts, promote_options="permissive")


def _schema() -> dict[str, pa.DataType]:
    return {
        "label": pa.int64(),
        "group": pa.string(),
        "num_tokens": pa.int32(),
        "score": pa.float64(),
        "split": pa.string(),
    }


def arrays(
    table: pa.Table, split: str, expected_rows: int
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """One split's columns as numpy, and rows left out of the metrics by reason."""
    part = table.filter(pc.equal(table.column("split"), split))
    if part.num_rows != expected_rows:
        raise DataError(
            f"{split} split: scored {part.num_rows} rows but the manifest lists {expected_rows}: "
            "the data directory changed after `data prepare` wrote it; prepare it again"
        )
    label = part.column("label").to_numpy(zero_copy_only=False)
    score = part.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    bad_label = ~np.isin(label, [0, 1])
    bad_score = ~np.isfinite(score) & ~bad_label
    keep = ~(bad_label | bad_score)
    cols = {
        "y": label[keep].astype(np.int64),
        "p": score[keep],
        "group": part.column("group").to_numpy(zero_copy_only=False)[keep],
        "num_tokens": part.column("num_tokens").to_numpy(zero_copy_only=False)[keep],
    }
    rejected = {"bad_label": int(bad_label.sum()), "nonfinite_score": int(bad_score.sum())}
    return cols, rejected


# -- the stage -------------------------------------------------------------------------------
def _check_tokenizer(source: ModelSource, manifest: mf.Manifest, data: str) -> None:
    """Prepared ids are scored as they are: the checkpoint must use the data's tokenizer."""
    lineage = dict(source.lineage)
    info = storage.join(source.path, "steam_ray.json")
    if not lineage.get("tokenizer_fingerprint") and storage.exists(info):
        with contextlib.suppress(OSError, ValueError):
            lineage = storage.read_json(info)
    theirs = lineage.get("tokenizer_fingerprint")
    if theirs and theirs != manifest.tokenizer_fingerprint:
        raise ConfigError(
            f"checkpoint {source.path} was trained on tokenizer {theirs}, but {data} is "
            f"tokenized with {manifest.tokenizer_fingerprint} ({manifest.tokenizer_name}): "
            "prepare the data with the checkpoint's tokenizer"
        )


def _splits(cfg: EvaluateConfig, manifest: mf.Manifest) -> list[str]:
    wanted: list[str] = [TUNE_SPLIT] if cfg.split == TUNE_SPLIT else [TUNE_SPLIT, cfg.split]
    for split in wanted:
        stats = manifest.splits.get(split)
        if stats is None or stats.rows == 0:
            raise DataError(
                f"{mf.manifest_path(cfg.data)}: the {split} split is empty; evaluate needs rows "
                f"in val (to tune the threshold) and in {cfg.split}"
            )
    return wanted


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score, measure, report; see the module doc. Returns the headline figures and paths."""
    start = time.perf_counter()
    if not cfg.checkpoint:
        raise ConfigError("no checkpoint: pass --checkpoint PATH|RUN_DIR|best|NAME:VERSION")
    source = resolve_source(cfg.checkpoint, cfg.registry)
    _progress(start, f"checkpoint {source.path} (ref {source.ref})")
    manifest = mf.read_manifest(cfg.data)
    _check_tokenizer(source, manifest, cfg.data)
    splits = _splits(cfg, manifest)
    rows = sum(manifest.splits[s].rows for s in splits)
    _progress(start, f"scoring {rows:,} rows of {' + '.join(splits)} on Ray Data")
    table = score_splits(cfg, source.path, splits)
    _progress(start, f"scored {table.num_rows:,} rows; computing metrics")
    result, data = measure(cfg, source, manifest, table)
    _progress(start, f"threshold {result['threshold']['value']:.4f} tuned on val; writing report")
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    paths = write_outputs(cfg, result, data[cfg.split])
    _progress(start, f"wrote {paths['report']}")
    attached = attach(cfg, source, result, paths)
    if attached:
        _progress(start, f"attached the evaluation to registry version {attached}")
    return {
        "checkpoint": source.path,
        "registry_version": attached,
        "threshold": result["threshold"]["value"],
        "split": cfg.split,
        TUNE_SPLIT: summary(result["splits"][TUNE_SPLIT]),
        cfg.split: summary(result["splits"][cfg.split]),
        "worst_slices": [
            {k: r[k] for k in ("kind", "slice", "n", "accuracy")}
            for r in result["worst_slices"][:3]
        ],
        **paths,
    }


def measure(
    cfg: EvaluateConfig, source: ModelSource, manifest: mf.Manifest, table: pa.Table
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """(metrics.json's content, each split's arrays) from the scored rows."""
    data: dict[str, dict[str, np.ndarray]] = {}
    rejected: dict[str, dict[str, int]] = {}
    for split in dict.fromkeys([TUNE_SPLIT, cfg.split]):
        data[split], rejected[split] = arrays(table, split, manifest.splits[split].rows)
    val = data[TUNE_SPLIT]
    threshold = tune_threshold(val["y"], val["p"])
    target = data[cfg.split]
    by_kind = slices(
        target["y"],
        target["p"],
        threshold,
        groups=target["group"],
        num_tokens=target["num_tokens"],
        max_length=manifest.max_length,
        top_groups=cfg.top_groups,
    )
    result = {
        "checkpoint": source.path,
        "ref": source.ref,
        "model_name": source.name,
        "registry_version": source.version,
        "data": cfg.data,
        "data_fingerprint": manifest.fingerprint,
        "dataset": {"source": manifest.source, "input": manifest.input},
        "tokenizer": manifest.tokenizer_name,
        "max_length": manifest.max_length,
        "split": cfg.split,
        "threshold": _threshold_info(threshold, val["y"], val["p"], cfg.split),
        "splits": {s: split_metrics(d["y"], d["p"], threshold, cfg) for s, d in data.items()},
        "rejected": rejected,
        "slices": by_kind,
        "worst_slices": worst_slices(by_kind),
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return result, data


def _threshold_info(threshold: float, y: np.ndarray, p: np.ndarray, split: str) -> dict[str, Any]:
    return {
        "value": threshold,
        "tuned_on": TUNE_SPLIT,
        "objective": "macro_f1",
        "rule": "positive iff score >= threshold",
        "tuned_on_evaluated_split": split == TUNE_SPLIT,  # then its metrics are optimistic
        "tunable": len(np.unique(y)) == 2,
    }


# -- outputs ---------------------------------------------------------------------------------
def write_outputs(
    cfg: EvaluateConfig, result: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, str]:
    """metrics.json, report.html + PNGs and README.md, written aside, then swapped into OUTPUT."""
    staging = storage.staging_dir(cfg.output)
    fs, staging_inner = storage.resolve(staging)
    try:
        write_report(result, arrays["y"], arrays["p"], staging)
        storage.write_text(storage.join(staging, CARD_FILE), model_card(_json_safe(result)))
        storage.write_json(storage.join(staging, METRICS_FILE), _json_safe(result))
        # metrics.json leaves first and arrives last; other files in OUTPUT stay.
        storage.publish(staging, cfg.output, METRICS_FILE, set(OUTPUT_FILES).__contains__)
    finally:
        with contextlib.suppress(OSError, pa.ArrowException):
            storage.delete_at(fs, staging_inner)
    return {
        "report": storage.join(cfg.output, REPORT_FILE),
        "metrics_path": storage.join(cfg.output, METRICS_FILE),
        "card": storage.join(cfg.output, CARD_FILE),
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def owned_checkpoint_dir(source: ModelSource) -> str | None:
    """The local checkpoint directory our training wrote (a steam_ray.json in it), unless it
    is a registry copy (which only the registry API writes): where the card goes too."""
    if source.version is not None or storage.is_uri(source.path):
        return None
    path = Path(source.path)
    if not (path / "steam_ray.json").is_file() or (path.parent / "version.json").is_file():
        return None
    return str(path) if os.access(path, os.W_OK) else None


def registry_evaluation(result: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """What a registry version keeps of an evaluation (the headline, not the bins)."""
    record: dict[str, Any] = _json_safe(
        {
            "threshold": result["threshold"]["value"],
            "threshold_tuned_on": TUNE_SPLIT,
            "split": result["split"],
            "data": result["data"],
            "data_fingerprint": result["data_fingerprint"],
            "metrics": {s: summary(m) for s, m in result["splits"].items()},
            "worst_slices": result["worst_slices"][:5],
            "report": paths["report"],
            "metrics_path": paths["metrics_path"],
            "evaluated_at": result["evaluated_at"],
        }
    )
    return record


def attach(
    cfg: EvaluateConfig, source: ModelSource, result: dict[str, Any], paths: dict[str, str]
) -> str | None:
    """The card beside an owned checkpoint; evaluation + card onto a registry version."""
    card = storage.read_text(paths["card"])
    local = owned_checkpoint_dir(source)
    if local is not None:
        tmp = Path(local) / f".{CARD_FILE}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(card, encoding="utf-8")
        os.replace(tmp, Path(local) / CARD_FILE)  # atomic: the old card or the new one
    if source.version is None:
        return None
    from steam_ray.registry import Registry
    from steam_ray.serve.source import DEFAULT_REGISTRY

    registry = Registry(cfg.registry or DEFAULT_REGISTRY)
    registry.attach_evaluation(
        source.name, source.version, registry_evaluation(result, paths), card
    )
    return f"{source.name}:{source.version}"
