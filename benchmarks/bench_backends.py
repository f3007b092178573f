"""Pick the CPU serving backend by measurement: speed and test-split accuracy of each backend.

    python benchmarks/bench_backends.py --checkpoint artifacts/quickstart/train/RUN/checkpoint_... \
        --data artifacts/quickstart/data --threads 1 --repeats 3

For each of torch (fp32), torch-int8 (dynamic), onnx (fp32), onnx-int8 (dynamic): accuracy on
the test split, its change vs torch fp32 (points), and model-only throughput in reviews/s
(batches of 32 test reviews sorted by length, as the Serve replica runs them; no HTTP). The
default is the fastest backend whose accuracy drop is <= 0.5 point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BACKENDS = ("torch", "torch-int8", "onnx", "onnx-int8")
MAX_DROP_POINTS = 0.5


def load_split(data: str, split: str = "test") -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    table = pq.read_table(str(Path(data) / split), columns=["text", "label"])
    return table.column("text").to_pylist(), table.column("label").to_pylist()


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


def main() -> None:
    from steam_ray.serve.backends import Predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="Prepared data dir (with test/).")
    ap.add_argument("--threads", type=int, default=1, help="Intra-op threads (a replica's CPUs).")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15.0, help="Timed seconds per repeat.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--json", default=None, help="Also write the results here.")
    args = ap.parse_args()

    texts, labels = load_split(args.data)
    results: dict[str, dict[str, float | list[float]]] = {}
    predictors = {}
    with tempfile.TemporaryDirectory() as cache:
        for backend in BACKENDS:
            t0 = time.perf_counter()
            pred = Predictor(
                args.checkpoint,
                backend=backend,  # type: ignore[arg-type]
                threads=args.threads,
                max_length=args.max_length,
                cache_dir=cache,
            )
            load_s = time.perf_counter() - t0
            # Accuracy with the serving batch shape (int8 activations are scaled per batch).
            correct = 0
            for i in range(0, len(texts), args.batch):
                scores = pred.scores(texts[i : i + args.batch])
                batch_labels = labels[i : i + args.batch]
                correct += sum(
                    int(s >= 0.5) == y for s, y in zip(scores, batch_labels, strict=True)
                )
            predictors[backend] = pred
            results[backend] = {"accuracy": correct / len(texts), "load_s": load_s}
            print(f"{backend:11s} acc={correct / len(texts):.4f} load={load_s:.1f}s", flush=True)
        # Round-robin repeats: on a shared machine each backend sees the same contention.
        rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for rep in range(args.repeats):
            for backend in BACKENDS:
                rate = throughput(predictors[backend], texts, args.batch, args.seconds)
                rates[backend].append(rate)
                print(f"repeat {rep + 1} {backend:11s} {rate:7.1f} reviews/s", flush=True)
        for backend in BACKENDS:
            results[backend]["reviews_per_s"] = statistics.median(rates[backend])
            results[backend]["reviews_per_s_all"] = rates[backend]
    base_acc = float(results["torch"]["accuracy"])  # type: ignore[arg-type]
    base_speed = float(results["torch"]["reviews_per_s"])  # type: ignore[arg-type]
    print(f"\n{len(texts)} test reviews, threads={args.threads}, batch={args.batch}")
    print("| backend | accuracy | Δ vs fp32 (points) | reviews/s (median) | runs | x torch fp32 |")
    print("|---|---|---|---|---|---|")
    eligible = []
    for backend, r in results.items():
        drop = (base_acc - float(r["accuracy"])) * 100  # type: ignore[arg-type]
        speed = float(r["reviews_per_s"])  # type: ignore[arg-type]
        print(
            f"| {backend} | {float(r['accuracy']):.4f} | {-drop:+.2f} | {speed:.1f} | "  # type: ignore[arg-type]
            f"{', '.join(f'{x:.1f}' for x in r['reviews_per_s_all'])} | "  # type: ignore[union-attr]
            f"{speed / base_speed:.2f}x |"
        )
        if drop <= MAX_DROP_POINTS:
            eligible.append((speed, backend))
    print(f"\nfastest within {MAX_DROP_POINTS} point of fp32: {max(eligible)[1]}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
