"""Benchmark ``data prepare`` (Ray Data) against a hand-written single-process baseline.

    .venv/bin/python benchmarks/bench_data_prepare.py --rows 200000 [--workdir /tmp/bench]

Both read the same synthetic Steam-schema CSV (benchmarks/synth.py), apply the same rules and
the same fast tokenizer (steam_ray's ``Encoder``: Rust ``encode_batch_fast``, batched) and
write Parquet. Peak memory of the process tree (driver + Ray's raylet and workers) is sampled
two ways: summed RSS (shared object-store pages counted once per process that maps them, so it
overstates Ray) and summed PSS (shared pages split between the processes that map them: the
real footprint).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import synth


class PeakRss:
    """Samples the RSS and PSS of this process and all its descendants in a thread."""

    def __init__(self, interval: float = 0.25) -> None:
        self.peak = 0
        self.peak_pss = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, int]:
        me = psutil.Process()
        rss = pss = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error, AttributeError):
                info = p.memory_full_info()
                rss += info.rss
                pss += info.pss
        return rss, pss

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = self._sample()
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def baseline(csv_path: str, out: str, model_path: str, max_length: int = 256) -> dict[str, Any]:
    """Single process: pandas read_csv chunks -> same rules -> batched fast tokenizer -> Parquet."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from steam_ray.data.tokenize import Encoder

    # The pipeline's own encoder (Rust encode_batch_fast, long texts cut at a word boundary
    # first): the comparison measures the pipeline, not two ways of calling the tokenizer.
    encoder = Encoder(model_path, max_length)
    mask = re.compile(r"♥(?:\s*♥)*")
    seen: set[tuple[str, str]] = set()
    writers: dict[str, pq.ParquetWriter] = {}
    schema = pa.schema(
        [
            ("text", pa.string()),
            ("label", pa.int64()),
            ("group", pa.string()),
            ("input_ids", pa.list_(pa.int32())),
        ]
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    counts = {"read": 0, "kept": 0}
    for chunk in pd.read_csv(
        csv_path, dtype=str, keep_default_na=False, chunksize=100_000, on_bad_lines="skip"
    ):
        counts["read"] += len(chunk)
        text = chunk["review_text"].str.replace(mask, "♥", regex=True).str.strip()
        score = chunk["review_score"].str.strip()
        group = chunk["app_id"].str.strip()
        ok = (text != "") & (text.str.lower() != "early access review") & score.isin(["1", "-1"])
        keep = []
        for i, (g, t, o) in enumerate(zip(group, text, ok, strict=True)):
            if o and (g, t) not in seen:
                seen.add((g, t))
                keep.append(i)
        text, score, group = text.iloc[keep], score.iloc[keep], group.iloc[keep]
        texts = text.tolist()
        ids, _, _ = encoder.encode(texts)
        u = [_h64(f"42\x1f{g}") / 2**64 for g in group]
        split = ["test" if x < 0.1 else "val" if x < 0.2 else "train" for x in u]
        table = pa.table(
            {
                "text": texts,
                "label": (score == "1").astype("int64").tolist(),
                "group": group.tolist(),
                "input_ids": ids,
            },
            schema=schema,
        )
        splits = pa.array(split)
        for s in ("train", "val", "test"):
            part = table.filter(pa.compute.equal(splits, s))
            if s not in writers:
                Path(out, s).mkdir(exist_ok=True)
                writers[s] = pq.ParquetWriter(f"{out}/{s}/part-0.parquet", schema)
            writers[s].write_table(part)
        counts["kept"] += len(texts)
    for w in writers.values():
        w.close()
    return counts


def run(
    rows: int, workdir: str, seed: int, tokenizer_actors: int | None, skip_baseline: bool = False
) -> dict[str, Any]:
    from steam_ray.config import OFFLINE_MODEL_NAME, DataConfig, resolve_model

    csv_path = f"{workdir}/steam_{rows}.csv"
    if not Path(csv_path).is_file():
        t = time.perf_counter()
        synth.generate_steam_csv(csv_path, rows, seed)
        print(f"generated {csv_path} in {time.perf_counter() - t:.1f}s", flush=True)
    size_mb = os.path.getsize(csv_path) / 1e6
    model = resolve_model(OFFLINE_MODEL_NAME)

    if skip_baseline:
        counts, base_s, base_peak, base_pss = {"read": rows, "kept": -1}, float("nan"), 0, 0
    else:
        with PeakRss() as mem_b:
            t = time.perf_counter()
            counts = baseline(csv_path, f"{workdir}/out_baseline_{rows}", model)
            base_s = time.perf_counter() - t
        base_peak, base_pss = mem_b.peak, mem_b.peak_pss
        print(f"baseline: {counts} in {base_s:.1f}s", flush=True)

    import ray

    from steam_ray.data.pipeline import prepare, print_summary

    with PeakRss() as mem_r:
        t = time.perf_counter()
        ray.init(include_dashboard=False)
        init_s = time.perf_counter() - t
        cfg = DataConfig(
            source="steam",
            input=csv_path,
            output=f"{workdir}/out_ray_{rows}",
            tokenizer_actors=tokenizer_actors,
        )
        t = time.perf_counter()
        manifest = prepare(cfg)
        ray_s = time.perf_counter() - t
    print_summary(manifest)
    ray.shutdown()
    result = {
        "rows": rows,
        "csv_mb": round(size_mb, 1),
        "baseline_s": round(base_s, 1),
        "baseline_rows_per_s": round(rows / base_s) if base_s == base_s else None,
        "baseline_peak_rss_mb": round(base_peak / 1e6),
        "baseline_peak_pss_mb": round(base_pss / 1e6),
        "ray_init_s": round(init_s, 1),
        "ray_s": round(ray_s, 1),
        "ray_rows_per_s": round(rows / ray_s),
        "ray_peak_rss_mb": round(mem_r.peak / 1e6),
        "ray_peak_pss_mb": round(mem_r.peak_pss / 1e6),
        "speedup": round(base_s / ray_s, 2),
        "rows_kept_ray": manifest.rows_kept,
        "rows_kept_baseline": counts["kept"],
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workdir", default="/tmp/steam_ray_bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-actors", type=int, default=None)
    parser.add_argument("--skip-baseline", action="store_true", help="time the Ray pipeline only")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run(args.rows, args.workdir, args.seed, args.tokenizer_actors, args.skip_baseline)


if __name__ == "__main__":
    main()
