"""``steam-ray tune report OUTPUT``: report.html + PNG plots of a finished (or running) sweep.

Reads OUTPUT/result.json and OUTPUT/history.json (written by ``steam_ray.tune``) and draws,
with matplotlib: the metric per trial, the learning curves with scheduler stops marked, and
each hyperparameter against the metric.
"""

from __future__ import annotations

import html
import io
import json
import math
from typing import Any

from steam_ray import storage
from steam_ray.errors import DataError

REPORT_FILE = "report.html"
PLOTS = ("metric_per_trial.png", "learning_curves.png", "hyperparameters.png")


def _load(output: str, name: str) -> Any:
    path = storage.join(output, name)
    if not storage.exists(path):
        raise DataError(f"{path} not found: is {output} the output of `steam-ray tune`?")
    try:
        return storage.read_json(path)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def _save(fig: Any, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    fs, inner = storage.resolve(path)
    with fs.open_output_stream(inner) as f:
        f.write(buf.getvalue())


def _score(trial: dict[str, Any], metric: str) -> float:
    value = (trial.get("best_metrics") or {}).get(metric)
    return float(value) if isinstance(value, int | float) else math.nan


def _label(trial: dict[str, Any]) -> str:
    return str(trial["trial_id"])


def plot_metric_per_trial(result: dict[str, Any], path: str) -> None:
    import matplotlib.pyplot as plt

    metric, trials = result["metric"], result["trials"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(trials) + 2), 3.5))
    colors = []
    for t in trials:
        if t["trial_id"] == result.get("best_trial_id"):
            colors.append("tab:green")
        elif t["stopped_early"]:
            colors.append("tab:gray")
        else:
            colors.append("tab:blue")
    scores = [_score(t, metric) for t in trials]
    ax.bar([_label(t) for t in trials], [0 if math.isnan(s) else s for s in scores], color=colors)
    ax.set_ylabel(f"best {metric}")
    ax.set_title(f"best {metric} per trial (green: sweep best, gray: stopped early)")
    ax.tick_params(axis="x", rotation=45)
    _save(fig, path)
    plt.close(fig)


def plot_learning_curves(
    result: dict[str, Any], history: dict[str, list[dict[str, Any]]], path: str
) -> None:
    import matplotlib.pyplot as plt

    metric = result["metric"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in result["trials"]:
        points = [
            (p["step"], p[metric])
            for p in history.get(t["trial_id"], [])
            if isinstance(p.get(metric), int | float) and isinstance(p.get("step"), int | float)
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        (line,) = ax.plot(xs, ys, marker=".", label=_label(t))
        if t["stopped_early"]:
            ax.plot(xs[-1], ys[-1], marker="x", markersize=12, color=line.get_color(), mew=2)
    ax.plot([], [], "kx", markersize=10, mew=2, label="stopped by the scheduler")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("learning curves")
    ax.legend(fontsize=7, loc="best")
    _save(fig, path)
    plt.close(fig)


def plot_hyperparameters(result: dict[str, Any], path: str) -> None:
    import matplotlib.pyplot as plt

    metric, trials = result["metric"], result["trials"]
    names = sorted({k for t in trials for k in (t.get("config") or {})})
    cols = max(1, min(3, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        xs: list[Any] = [(t.get("config") or {}).get(name) for t in trials]
        ys = [_score(t, metric) for t in trials]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
        if numeric:
            ax.scatter(xs, ys)
            positive = all(float(x) > 0 for x in xs)
            if positive and max(xs) / max(min(xs), 1e-300) > 50:
                ax.set_xscale("log")
        else:
            cats = sorted({str(x) for x in xs})
            ax.scatter([cats.index(str(x)) for x in xs], ys)
            ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(name)
        ax.set_ylabel(f"best {metric}")
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"hyperparameters vs best {metric}")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _html(result: dict[str, Any]) -> str:
    metric = result["metric"]
    names = sorted({k for t in result["trials"] for k in (t.get("config") or {})})
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ("trial", "status", "stopped early", "evals", f"best {metric}", *names)
    )
    rows = []
    sign = -1.0 if result["mode"] == "max" else 1.0
    for t in sorted(result["trials"], key=lambda t: sign * _score(t, metric)):
        cells = [
            t["trial_id"] + (" (best)" if t["trial_id"] == result.get("best_trial_id") else ""),
            t["status"],
            "yes" if t["stopped_early"] else "no",
            t["iterations"],
            _score(t, metric),
            *[(t.get("config") or {}).get(n) for n in names],
        ]
        rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    images = "\n".join(f'<p><img src="{p}" alt="{p}"></p>' for p in PLOTS)
    best = html.escape(json.dumps(result.get("best_config"), default=str))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>steam-ray sweep report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}img{{max-width:100%}}</style>
</head><body>
<h1>Sweep report</h1>
<p>Output: <code>{html.escape(str(result.get("output", "")))}</code> &middot; metric
<b>{html.escape(metric)}</b> ({html.escape(result["mode"])}) &middot;
{len(result["trials"])} trials &middot; best trial
<b>{html.escape(str(result.get("best_trial_id")))}</b></p>
<p>Best config: <code>{best}</code><br>Best checkpoint:
<code>{html.escape(str(result.get("best_checkpoint")))}</code></p>
<table><tr>{head}</tr>
{"".join(rows)}
</table>
{images}
</body></html>
"""


def write_report(output: str) -> str:
    """Write OUTPUT/report.html and the PNGs beside it; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a cluster node or in CI
    result = _load(output, "result.json")
    history = _load(output, "history.json")
    if not result.get("trials"):
        raise DataError(f"{output}/result.json lists no trials")
    plot_metric_per_trial(result, storage.join(output, PLOTS[0]))
    plot_learning_curves(result, history, storage.join(output, PLOTS[1]))
    plot_hyperparameters(result, storage.join(output, PLOTS[2]))
    path = storage.join(output, REPORT_FILE)
    storage.write_text(path, _html(result))
    return path
