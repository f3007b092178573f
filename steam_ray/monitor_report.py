"""drift.json, report.html and its PNGs for ``steam-ray monitor`` (steam_ray.report's pieces)."""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from steam_ray import report, storage
from steam_ray.evaluate import _json_safe

if TYPE_CHECKING:
    from steam_ray.monitor import Window

DRIFT_FILE = "drift.json"
REPORT_FILE = "report.html"
PLOTS = ("token_length.png", "unknown_token_rate.png", "score.png", "positive_rate.png")
#: What a monitor run owns in OUTPUT; drift.json leaves first and arrives last.
OUTPUT_FILES = (DRIFT_FILE, REPORT_FILE, *PLOTS)


def plot_hist(ref: np.ndarray, cur: np.ndarray, path: str, title: str, xlabel: str) -> None:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    both = np.r_[ref, cur]
    bins = np.histogram_bin_edges(both, bins=30) if both.size else 10
    ax.hist(ref, bins=bins, density=True, alpha=0.55, label=f"reference (n={ref.size:,})")
    ax.hist(cur, bins=bins, density=True, alpha=0.55, label=f"current (n={cur.size:,})")
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.legend()
    report.save_png(fig, path)


def plot_rate(cur: Window, ref_rate: float, threshold: float, path: str) -> None:
    """The predicted-positive rate per time bucket (or per chunk of rows without times)."""
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    positive = cur.scores >= threshold
    if cur.times is not None and cur.times.size:
        order = np.argsort(cur.times)
        edges = np.linspace(0, order.size, min(20, order.size) + 1).astype(int)
        xs = [cur.times[order[a]] for a in edges[:-1]]
        ax.set_xlabel("time (start of bucket)")
        fig.autofmt_xdate()
    else:
        order = np.arange(positive.size)
        edges = np.linspace(0, order.size, min(20, order.size) + 1).astype(int)
        xs = list(edges[:-1])
        ax.set_xlabel("row (start of chunk)")
    rates = [positive[order[a:b]].mean() for a, b in itertools.pairwise(edges)]
    ax.plot(xs, rates, marker="o", label="current")
    ax.axhline(ref_rate, color="gray", linestyle="--", label="reference")
    ax.set(title="Predicted-positive rate", ylabel="share positive", ylim=(0, 1))
    ax.legend()
    report.save_png(fig, path)


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, check in result["checks"].items():
        verdict = "DRIFT" if check["drift"] else "ok"
        rows.append([name, check["statistic"], check["threshold"], verdict])
    return rows


def _body(result: dict[str, Any]) -> str:
    verdict = "Drift detected" if result["drift_detected"] else "No drift detected"
    parts = [
        f"<h2>{verdict}</h2>",
        report.table(
            ["window", "name", "reviews"],
            [
                ["reference", result["reference"]["name"], result["reference"]["rows"]],
                ["current", result["current"]["name"], result["current"]["rows"]],
            ],
        ),
        "<h2>Checks</h2>",
        report.table(["check", "statistic", "threshold", "verdict"], _rows(result)),
        "<p>PSI decides distribution checks (KS and Wasserstein are in drift.json); the rate "
        "check's statistic is a two-proportion test's p-value; the domain check is the "
        "cross-validated ROC-AUC of telling current texts from reference ones.</p>",
    ]
    parts += [report.image(name) for name in PLOTS]
    return "\n".join(parts)


def write_outputs(
    output: str, result: dict[str, Any], ref: Window, cur: Window, threshold: float
) -> dict[str, str]:
    """Everything into a staging dir beside OUTPUT, then swapped in."""
    staging = storage.staging_dir(output)
    plot_hist(
        ref.num_tokens,
        cur.num_tokens,
        storage.join(staging, PLOTS[0]),
        "Tokens per review",
        "tokens",
    )
    plot_hist(
        ref.unk_rate,
        cur.unk_rate,
        storage.join(staging, PLOTS[1]),
        "Unknown-token rate",
        "share of tokens",
    )
    plot_hist(ref.scores, cur.scores, storage.join(staging, PLOTS[2]), "Scores", "P(positive)")
    plot_rate(
        cur, float(np.mean(ref.scores >= threshold)), threshold, storage.join(staging, PLOTS[3])
    )
    storage.write_text(
        storage.join(staging, REPORT_FILE), report.page("steam-ray drift report", _body(result))
    )
    storage.write_text(
        storage.join(staging, DRIFT_FILE), json.dumps(_json_safe(result), indent=2) + "\n"
    )
    storage.publish(staging, output, DRIFT_FILE, set(OUTPUT_FILES).__contains__)
    return {
        "drift_json": storage.join(output, DRIFT_FILE),
        "report": storage.join(output, REPORT_FILE),
    }
