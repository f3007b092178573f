"""Accuracy of a checkpoint on the sample's test split and on held-out reviews from other domains.

    python benchmarks/bench_quality.py --checkpoint artifacts/quickstart/summary.json \
        --data artifacts/quickstart/data

``--checkpoint``: a save_pretrained dir, a train/tune output (its result.json names the best),
or a quickstart summary.json (its best_checkpoint). The held-out sets (benchmarks/heldout/,
written by hand for this project and never used in training; see its README) are short
product, film and restaurant reviews; the sample's test split holds critic snippets of movies
that no training row comes from. Prints accuracy per set and the mean over the held-out sets;
``--json`` also writes them to a file. Runs the serving path (``serve.backends.Predictor``) and
labels at 0.5 and at the threshold the model is served with (a registry version's or a
quickstart's, tuned on val by `steam-ray evaluate`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HELDOUT_DIR = Path(__file__).resolve().parent / "heldout"


def load_jsonl(path: Path) -> tuple[list[str], list[int]]:
    """(texts, labels) of a held-out set; a bad row stops with its file and line."""
    texts, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("text"), str) or row.get("label") not in (0, 1):
            sys.exit(f"error: {path}:{n}: needs a string 'text' and a 0/1 'label'")
        texts.append(row["text"])
        labels.append(int(row["label"]))
    return texts, labels


def load_test_split(data: str) -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    table = pq.read_table(str(Path(data) / "test"), columns=["text", "label"])
    return table.column("text").to_pylist(), table.column("label").to_pylist()


def checkpoint_path(ref: str, registry: str | None = None) -> tuple[str, float | None]:
    """A checkpoint dir and the threshold it is served with (a summary.json without one: None;
    a plain dir: 0.5), from a dir, a train/tune output, a registry ref, or a summary.json."""
    path = Path(ref)
    if path.is_file() and path.suffix == ".json":
        summary = json.loads(path.read_text())
        return str(summary["best_checkpoint"]), summary.get("threshold")
    from steam_ray.serve.source import resolve_source

    source = resolve_source(ref, registry)
    return source.path, source.threshold


def accuracy(scores: list[float], labels: list[int], threshold: float) -> float:
    from steam_ray.serve.backends import label_of

    hits = (
        label_of(s, threshold) == ("positive" if y else "negative")
        for s, y in zip(scores, labels, strict=True)
    )
    return sum(hits) / len(labels)


def score_all(
    checkpoint: str, data: str | None, threads: int
) -> dict[str, tuple[list[float], list[int]]]:
    """Scores and labels per set: the sample's test split (with --data), then each held-out set."""
    from steam_ray.serve.backends import Predictor

    predictor = Predictor(checkpoint, backend="torch", threads=threads)
    sets = {p.stem: load_jsonl(p) for p in sorted(HELDOUT_DIR.glob("*.jsonl"))}
    if data is not None:
        sets = {"sample_test": load_test_split(data), **sets}
    return {name: (predictor.scores(texts), labels) for name, (texts, labels) in sets.items()}


def accuracies(scored: dict[str, tuple[list[float], list[int]]], t: float) -> dict[str, float]:
    out = {name: accuracy(scores, labels, t) for name, (scores, labels) in scored.items()}
    out["heldout_mean"] = statistics.fmean(v for k, v in out.items() if k != "sample_test")
    return out


def label_thresholds(served: float | None, given: float | None = None) -> dict[str, float]:
    """0.5, and the threshold serve/predict label with (the version's, tuned on val), or
    ``given`` (--threshold) in its place."""
    other = given if given is not None else served
    return {"0.5": 0.5, **({f"{other:g}": other} if other is not None else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="Checkpoint dir, run output, summary.json")
    ap.add_argument("--data", help="Prepared data dir (with test/) for the sample's test split.")
    ap.add_argument("--registry", help="Registry root for best / NAME:VERSION refs.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="Also write the accuracies to this file.")
    ap.add_argument(
        "--threshold",
        type=float,
        help="Label at this threshold too (e.g. the one `steam-ray evaluate` tuned on val, in "
        "its metrics.json), for a checkpoint that is not a registry version.",
    )
    args = ap.parse_args()
    ckpt, served = checkpoint_path(args.checkpoint, args.registry)
    thresholds = label_thresholds(served, args.threshold)
    scored = score_all(ckpt, args.data, args.threads)
    results = {name: accuracies(scored, t) for name, t in thresholds.items()}
    print(f"checkpoint: {ckpt}")
    print(f"  {'set':<14} " + " ".join(f"{'at ' + name:>10}" for name in results))
    for row in next(iter(results.values())):
        print(f"  {row:<14} " + " ".join(f"{r[row]:>10.4f}" for r in results.values()))
    if args.json:
        out = {"checkpoint": ckpt, "served_threshold": served, "accuracy_at": results}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
