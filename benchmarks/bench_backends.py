"""Pick the CPU serving backend by measurement: speed and accuracy of every backend.

    python benchmarks/bench_backends.py --checkpoint artifacts/quickstart/train/RUN/checkpoint_... \
        --data artifacts/quickstart/data --threads 1 --repeats 3

For each backend of steam_ray.serve.backends.BACKENDS: accuracy on val + test together
(thousands of reviews, not one small split), its change vs torch fp32 in points with a paired
bootstrap 95% interval, label agreement with fp32, and model-only throughput in reviews/s
(batches of 32 reviews sorted by length, as the Serve replica runs them; no HTTP). The default
is the fastest backend that meets steam_ray.evaluate.backend_verdict's rule (drop <= 0.5 point
and agreement >= 98.5%).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from steam_ray.evaluate import MAX_DROP_POINTS, MIN_AGREEMENT, backend_verdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPLITS = ("val", "test")


def load_splits(data: str, splits: tuple[str, ...] = SPLITS) -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    texts: list[str] = []
    labels: list[int] = []
    for split in splits:
        table = pq.read_table(str(Path(data) / split), columns=["text", "label"])
        texts += table.column("text").to_pylist()
        labels += table.column("label").to_pylist()
    return texts, labels


def throughput(predictor: object, texts: list[str], batch: int, seconds: float) -> float:
    """Reviews/s over batches of ``batch`` consecutive texts, each sorted by length."""
    from steam_ray.serve.backends import Predictor

    assert isinstance(predictor, Predictor)
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    predictor.scores(batches[0])  # warm-up
    done, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        b = batches[i % len(batches)]
        predictor.scores(b)
        done += len(b)
        i += 1
    return done / (time.perf_counter() - t0)


def batch_scores(predictor: object, texts: list[str], batch: int) -> np.ndarray:
    """Scores with the serving batch shape (int8 activations are scaled per batch)."""
    from steam_ray.serve.backends import Predictor

    assert isinstance(predictor, Predictor)
    parts = [predictor.scores(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return np.concatenate(parts)


def report(results: dict[str, dict[str, Any]], n: int, args: argparse.Namespace) -> str:
    base_speed = float(results["torch"]["reviews_per_s"])
    print(f"\n{n} val+test reviews, threads={args.threads}, batch={args.batch}")
    print(
        "| backend | accuracy | Δ vs fp32 (points) | paired 95% CI | agreement | "
        "reviews/s (median) | runs | x torch fp32 | meets rule |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    eligible = []
    for backend, r in results.items():
        v, speed = r["verdict"], float(r["reviews_per_s"])
        low, high = v["delta_points_95ci"]
        print(
            f"| {backend} | {v['accuracy']:.4f} | {v['delta_points']:+.2f} | "
            f"[{low:+.2f}, {high:+.2f}] | {100 * v['agreement']:.2f}% | {speed:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in r['reviews_per_s_all'])} | "
            f"{speed / base_speed:.2f}x | {'yes' if v['eligible'] else 'no'} |"
        )
        if v["eligible"]:
            eligible.append((speed, backend))
    pick = max(eligible)[1]
    print(
        f"\nfastest within {MAX_DROP_POINTS} point of fp32 and >= {100 * MIN_AGREEMENT:.1f}% "
        f"agreement: {pick}"
    )
    return pick


def main() -> None:
    from steam_ray.serve.backends import BACKENDS, Predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="Prepared data dir (with val/ and test/).")
    ap.add_argument("--threads", type=int, default=1, help="Intra-op threads (a replica's CPUs).")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0, help="Timed seconds per repeat.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--json", default=None, help="Also write the results here.")
    args = ap.parse_args()

    texts, labels = load_splits(args.data)
    y = np.asarray(labels)
    results: dict[str, dict[str, Any]] = {}
    predictors = {}
    with tempfile.TemporaryDirectory() as cache:
        for backend in BACKENDS:  # torch (fp32, the reference) first
            t0 = time.perf_counter()
            pred = Predictor(
                args.checkpoint,
                backend=backend,  # type: ignore[arg-type]
                threads=args.threads,
                max_length=args.max_length,
                cache_dir=cache,
            )
            load_s = time.perf_counter() - t0
            scores = batch_scores(pred, texts, args.batch)
            ref = scores if backend == "torch" else results["torch"]["scores"]
            verdict = backend_verdict(y, ref, scores)
            predictors[backend] = pred
            results[backend] = {"scores": scores, "verdict": verdict, "load_s": load_s}
            print(f"{backend:16s} acc={verdict['accuracy']:.4f} load={load_s:.1f}s", flush=True)
        # Round-robin repeats: on a shared machine each backend sees the same contention.
        rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for rep in range(args.repeats):
            for backend in BACKENDS:
                rate = throughput(predictors[backend], texts, args.batch, args.seconds)
                rates[backend].append(rate)
                print(f"repeat {rep + 1} {backend:16s} {rate:7.1f} reviews/s", flush=True)
        for backend in BACKENDS:
            results[backend]["reviews_per_s"] = statistics.median(rates[backend])
            results[backend]["reviews_per_s_all"] = rates[backend]
    pick = report(results, len(texts), args)
    if args.json:
        for r in results.values():
            del r["scores"]
        Path(args.json).write_text(json.dumps({"pick": pick, "backends": results}, indent=2))


if __name__ == "__main__":
    main()
