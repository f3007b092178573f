"""Accuracy of a checkpoint on the sample's test split and on held-out reviews from other domains.

    python benchmarks/bench_quality.py --checkpoint artifacts/quickstart/summary.json \
        --data artifacts/quickstart/data

``--checkpoint``: a save_pretrained dir, a train/tune output (its result.json names the best),
or a quickstart summary.json (its best_checkpoint). The held-out sets (benchmarks/heldout/,
written by hand for this project and never used in training; see its README) are short
product, film and restaurant reviews; the sample's test split holds critic snippets of movies
that no training row comes from. Prints accuracy per set and the mean over the held-out sets;
``--json`` also writes them to a file. Runs the serving path (``serve.backends.Predictor``).
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


def checkpoint_path(ref: str) -> str:
    """A checkpoint dir from a dir, a train/tune output, or a quickstart summary.json."""
    path = Path(ref)
    if path.is_file() and path.suffix == ".json":
        return str(json.loads(path.read_text())["best_checkpoint"])
    from steam_ray.serve.source import resolve_source

    return resolve_source(ref).path


def accuracy(predictor: object, texts: list[str], labels: list[int]) -> float:
    from steam_ray.serve.backends import Predictor

    assert isinstance(predictor, Predictor)
    scores = predictor.scores(texts)
    return sum(int(s >= 0.5) == y for s, y in zip(scores, labels, strict=True)) / len(labels)


def score_all(checkpoint: str, data: str | None, threads: int) -> dict[str, float]:
    from steam_ray.serve.backends import Predictor

    predictor = Predictor(checkpoint, backend="torch", threads=threads)
    sets = {p.stem: load_jsonl(p) for p in sorted(HELDOUT_DIR.glob("*.jsonl"))}
    out: dict[str, float] = {}
    if data is not None:
        out["sample_test"] = accuracy(predictor, *load_test_split(data))
    for name, (texts, labels) in sets.items():
        out[name] = accuracy(predictor, texts, labels)
    out["heldout_mean"] = statistics.fmean(out[name] for name in sets)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="Checkpoint dir, run output, summary.json")
    ap.add_argument("--data", help="Prepared data dir (with test/) for the sample's test split.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="Also write the accuracies to this file.")
    args = ap.parse_args()
    ckpt = checkpoint_path(args.checkpoint)
    result = score_all(ckpt, args.data, args.threads)
    print(f"checkpoint: {ckpt}")
    for name, acc in result.items():
        print(f"  {name:<14} {acc:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": ckpt, **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
