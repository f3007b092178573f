"""HTML pages with PNG plots beside them: the pieces ``steam-ray evaluate`` uses (and a monitor
can reuse): writing a matplotlib figure through ``storage`` (local or gs://), an HTML table, a
page, and the plots of a binary classifier's scores (confusion matrix, ROC/PR curves,
reliability diagram, score histograms per class, slice bars).

matplotlib runs headless (Agg): there is no display on a cluster node or in CI.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from steam_ray import storage

CLASS_NAMES: tuple[str, str] = ("negative", "positive")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (set before pyplot is first imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str, *, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG to a local path or URI, then close it (figures hold memory)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    fs, inner = storage.resolve(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(buf.getvalue())


def fmt(value: Any) -> str:
    """A cell's text: floats to 4 significant digits, None as an em dash, HTML-escaped."""
    if value is None:
        return "&mdash;"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(src: str, alt: str = "") -> str:
    return f'<p><img src="{html.escape(src)}" alt="{html.escape(alt or src)}"></p>'


def page(title: str, body: str) -> str:
    """A whole HTML document: ``body`` is trusted HTML (built from ``table``/``image``)."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}img{{max-width:100%}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


# -- plots of a binary classifier ------------------------------------------------------------
def plot_confusion(matrix: Sequence[Sequence[int]], path: str, title: str) -> None:
    """``matrix[true][pred]`` counts, rows normalised for the colour, counts in the cells."""
    plt = pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(m):
        color = "white" if share[i, j] > 0.5 else "black"
        ax.text(j, i, f"{int(n)}\n{share[i, j]:.1%}", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_png(fig, path)


def plot_roc_pr(y: np.ndarray, p: np.ndarray, path: str, title: str) -> None:
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 3.8))
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        roc.plot(fpr, tpr)
        precision, recall, _ = precision_recall_curve(y, p)
        pr.plot(recall, precision)
        pr.axhline(float(np.mean(y)), color="gray", ls="--", lw=1, label="positive rate")
        pr.legend(loc="lower left", fontsize=8)
    roc.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {title}")
    pr.set(xlabel="recall", ylabel="precision", title=f"precision-recall: {title}")
    pr.set_ylim(0, 1.02)
    save_png(fig, path)


def plot_reliability(bins: Sequence[dict[str, Any]], path: str, title: str) -> None:
    """Observed positive rate against mean predicted P(positive), per equal-width bin; the
    bars under it count each bin's rows."""
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    full = [b for b in bins if b["count"]]
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfectly calibrated")
    ax.plot(
        [b["mean_score"] for b in full], [b["positive_rate"] for b in full], "o-", label="model"
    )
    ax.set(ylabel="observed positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    widths = [b["high"] - b["low"] for b in bins]
    hist.bar([b["low"] for b in bins], [b["count"] for b in bins], width=widths, align="edge")
    hist.set(xlabel="predicted P(positive)", ylabel="rows")
    save_png(fig, path)


def plot_score_histograms(y: np.ndarray, p: np.ndarray, threshold: float, path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.linspace(0, 1, 41)
    for label, name in enumerate(CLASS_NAMES):
        ax.hist(p[y == label], bins=edges, alpha=0.55, label=f"true {name}")
    ax.axvline(threshold, color="black", lw=1.5, label=f"threshold {threshold:.3f}")
    ax.axvline(0.5, color="gray", ls=":", lw=1, label="0.5")
    ax.set(xlabel="predicted P(positive)", ylabel="rows", title="scores per true class")
    ax.legend(fontsize=8)
    save_png(fig, path)


def plot_slice_bars(groups: dict[str, Sequence[dict[str, Any]]], path: str, title: str) -> None:
    """One panel per slice kind: accuracy per slice with its interval, ``n`` on each bar."""
    plt = pyplot()
    kinds = [k for k, v in groups.items() if v]
    fig, axes = plt.subplots(len(kinds) or 1, 1, figsize=(8, 2.6 * max(1, len(kinds))))
    for ax, kind in zip(np.atleast_1d(axes), kinds, strict=False):
        rows = groups[kind]
        acc = np.array([r["accuracy"] for r in rows])
        err = np.array(
            [[a - r["ci_low"], r["ci_high"] - a] for a, r in zip(acc, rows, strict=True)]
        ).T
        ax.barh(range(len(rows)), acc, xerr=err, capsize=2, color="tab:blue")
        ax.set_yticks(range(len(rows)), [f"{r['slice']} (n={r['n']})" for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set(xlim=(0, 1), xlabel="accuracy (95% Wilson interval)", title=kind)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
