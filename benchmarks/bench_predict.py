"""Benchmark ``steam-ray predict`` (Ray Data, an actor pool) against a plain single-process loop.

    .venv/bin/python benchmarks/bench_predict.py --rows 100000 [--backend torch] [--repeats 2]

Both score the same synthetic Steam-schema CSV (benchmarks/synth.py: real length mix, blanks,
quoted newlines) with the same ``Predictor`` backend and batch rule (length-sorted chunks
under a token budget), and write Parquet with label/score. The plain loop is what a user would
write: pyarrow reads the file, one ``Predictor`` with torch/onnxruntime threads = every core,
batches of ``--batch-size`` texts. ``predict`` runs with its defaults (one single-threaded
actor per CPU). Timed: end to end, model loading and actor start-up included. Each repeat
runs both, alternating which goes first, and prints predict/plain; the scores of the two are
compared row by row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

TEXT = "review_text"


def checkpoint(workdir: Path, given: str | None) -> str:
    """``--checkpoint``, else MiniLM with a random 2-label head (speed does not depend on it)."""
    if given:
        return given
    from serve_fixtures import make_checkpoint

    from steam_ray.config import OFFLINE_MODEL_NAME, resolve_model

    out = workdir / "checkpoint"
    if not (out / "config.json").is_file():
        make_checkpoint(out, resolve_model(OFFLINE_MODEL_NAME), seed=1)
    return str(out)


def plain(ck: str, src: Path, out: Path, backend: str, batch_size: int) -> tuple[float, int]:
    """Single process: read, skip blank texts, score in batches, write one Parquet file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from steam_ray.serve.backends import Predictor, label_of

    start = time.perf_counter()
    predictor = Predictor(ck, backend=backend, threads=os.cpu_count() or 1)  # type: ignore[arg-type]
    table = pacsv.read_csv(
        src,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={TEXT: pa.string()}),
    )
    keep = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(table.column(TEXT)), ""), False)
    table = table.filter(keep)
    texts = table.column(TEXT).to_pylist()
    scores = np.concatenate(
        [predictor.scores(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    )
    labels = pa.array([label_of(s) for s in scores], pa.string())
    table = table.append_column("label", labels).append_column("score", pa.array(scores))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-00000.parquet")
    return time.perf_counter() - start, table.num_rows


def ray_predict(ck: str, src: Path, out: Path, backend: str, batch_size: int) -> tuple[float, int]:
    from steam_ray.config import PredictConfig
    from steam_ray.predict import predict

    start = time.perf_counter()
    cfg = PredictConfig(
        checkpoint=ck,
        input=str(src),
        text_column=TEXT,
        output=str(out),
        backend=backend,  # type: ignore[arg-type]
        batch_size=batch_size,
    )
    summary = predict(cfg)
    return time.perf_counter() - start, int(summary["rows_scored"])


def max_score_diff(a: Path, b: Path) -> float:
    import numpy as np
    import pyarrow.dataset as pads

    def scores(p: Path) -> np.ndarray:
        table = pads.dataset(sorted(str(f) for f in p.glob("part-*.parquet"))).to_table()
        return np.asarray(table.column("score").to_numpy())

    x, y = scores(a), scores(b)
    return float(np.abs(x - y).max()) if x.shape == y.shape else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--checkpoint", default=None, help="Default: MiniLM + a random head.")
    ap.add_argument("--workdir", default="/tmp/bench_predict")
    args = ap.parse_args()

    import ray
    from synth import generate_steam_csv

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"steam_{args.rows}.csv"
    if not src.is_file():
        generate_steam_csv(src, args.rows, seed=0)
    ck = checkpoint(workdir, args.checkpoint)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
    print(f"{args.rows:,} rows, backend {args.backend}, {os.cpu_count()} CPUs", flush=True)
    contenders = {"plain": plain, "predict": ray_predict}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    ratios: list[float] = []
    for rep in range(args.repeats):
        order = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
        for name in order:
            sec, rows = contenders[name](
                ck, src, workdir / f"out_{name}", args.backend, args.batch_size
            )
            times[name].append(sec)
            print(f"repeat {rep + 1} {name:8s} {sec:7.1f}s  {rows / sec:7.1f} rows/s  ({rows:,})")
        ratios.append(times["plain"][-1] / times["predict"][-1])
        print(f"repeat {rep + 1} predict/plain speed: {ratios[-1]:.2f}x", flush=True)
    diff = max_score_diff(workdir / "out_plain", workdir / "out_predict")
    med = statistics.median(ratios)
    print(f"predict/plain: median {med:.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x")
    for name, ts in times.items():
        print(
            f"  {name:8s} median {statistics.median(ts):.1f}s (range {min(ts):.1f}-{max(ts):.1f})"
        )
    print(f"max |score difference| between the two outputs: {diff:.2e}")
    ray.shutdown()


if __name__ == "__main__":
    main()
