"""Benchmark ``data prepare`` (Ray Data) against hand-written single-process loops.

    .venv/bin/python benchmarks/bench_data_prepare.py --rows 200000 [--workdir /tmp/bench]

All read the same synthetic Steam-schema CSV (benchmarks/synth.py), apply the same rules with
the same fast tokenizer (all-MiniLM-L6-v2's Rust tokenizer, batched, truncation at 256) and
write Parquet. Two single-process baselines, both pandas chunks + a Python set for dedupe:

- ``plain``: the loop a user would write: ``tokenizer(texts, truncation=True, max_length=256)``
  (the Rust tokenizer runs its own thread pool over every core).
- ``encoder``: the same loop calling steam_ray's ``Encoder`` instead (``encode_batch_fast``,
  long texts cut at a word boundary first, no attention masks), so the ratio against it
  isolates what the Ray pipeline itself adds or costs on this machine.

Peak memory of the process tree (driver + Ray's raylet and workers) is sampled once a second
two ways: summed RSS (shared object-store pages counted once per process that maps them, so it
overstates Ray) and summed PSS (shared pages split between the processes that map them: the
real footprint). Sampling PSS reads /proc/*/smaps_rollup of every process (~30 ms a sample
with a Ray cluster up), so it is kept at 1 s to cost the timed runs little.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth

CONTENDERS = ("plain", "encoder", "ray")


class PeakRss:
    """Samples the RSS and PSS of this process and all its descendants in a thread."""

    def __init__(self, interval: float = 1.0) -> None:
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


def baseline(
    csv_path: str, out: str, model_path: str, tokenize: str, max_length: int = 256
) -> dict[str, Any]:
    """Single process: pandas read_csv chunks -> same rules -> batched fast tokenizer -> Parquet.

    ``tokenize``: ``plain`` (the tokenizer's own batched call) or ``encoder`` (steam_ray's).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from steam_ray.data.tokenize import Encoder

    if tokenize == "plain":
        tok = AutoTokenizer.from_pretrained(model_path)

        def encode(texts: list[str]) -> Any:
            return tok(texts, truncation=True, max_length=max_length)["input_ids"]
    else:
        encoder = Encoder.from_pretrained(model_path, max_length)

        def encode(texts: list[str]) -> Any:
            return encoder.encode(texts)[0]

    mask = re.compile(r"♥(?:\s*♥)*")
    seen: set[tuple[str, str, str]] = set()
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
        for i, (g, t, s, o) in enumerate(zip(group, text, score, ok, strict=True)):
            if o and (g, t, s) not in seen:
                seen.add((g, t, s))
                keep.append(i)
        text, score, group = text.iloc[keep], score.iloc[keep], group.iloc[keep]
        texts = text.tolist()
        ids = encode(texts)
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


def _csv_path(workdir: str, rows: int) -> str:
    """The synthetic input for ``rows`` (written by the parent, read by each contender)."""
    return f"{workdir}/steam_{rows}.csv"


def run_one(
    contender: str, rows: int, workdir: str, tokenizer_actors: int | None
) -> dict[str, Any]:
    """Time one contender in this process and measure this process tree's peak memory."""
    from steam_ray.config import OFFLINE_MODEL_NAME, DataConfig, resolve_model

    csv_path = _csv_path(workdir, rows)
    model = resolve_model(OFFLINE_MODEL_NAME)
    if contender != "ray":
        with PeakRss() as mem:
            t = time.perf_counter()
            counts = baseline(
                csv_path, f"{workdir}/out_baseline_{contender}_{rows}", model, contender
            )
            elapsed = time.perf_counter() - t
        kept = counts["kept"]
    else:
        import ray

        from steam_ray.data.pipeline import prepare, print_summary

        with PeakRss() as mem:
            # Ray's start-up (a few seconds) is not timed: on a cluster it is already running.
            # address="local": a fresh cluster of its own, never another user's running one
            # (its memory would not be in this process tree).
            ray.init(address="local", include_dashboard=False)
            cfg = DataConfig(
                source="steam",
                input=csv_path,
                output=f"{workdir}/out_ray_{rows}",
                tokenizer_actors=tokenizer_actors,
            )
            t = time.perf_counter()
            manifest = prepare(cfg)
            elapsed = time.perf_counter() - t
        print_summary(manifest)
        ray.shutdown()
        kept = manifest.rows_kept
    return {
        "s": round(elapsed, 1),
        "rows_per_s": round(rows / elapsed),
        "peak_pss_mb": round(mem.peak_pss / 1e6),
        "peak_rss_mb": round(mem.peak / 1e6),
        "rows_kept": kept,
    }


def run(
    rows: int, workdir: str, seed: int, tokenizer_actors: int | None, contenders: list[str]
) -> dict[str, Any]:
    """Each contender in a fresh subprocess, one after the other: its memory figure is its own
    process tree (not a heap left over from the one before) and nothing runs beside it."""
    csv_path = _csv_path(workdir, rows)
    if not Path(csv_path).is_file():
        t = time.perf_counter()
        synth.generate_steam_csv(csv_path, rows, seed)
        print(f"generated {csv_path} in {time.perf_counter() - t:.1f}s", flush=True)
    result: dict[str, Any] = {"rows": rows, "csv_mb": round(os.path.getsize(csv_path) / 1e6, 1)}
    for contender in contenders:
        cmd = [sys.executable, __file__, "--rows", str(rows), "--workdir", workdir]
        cmd += ["--one", contender]
        if tokenizer_actors:
            cmd += ["--tokenizer-actors", str(tokenizer_actors)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        lines = proc.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        result[contender] = json.loads(lines[-1])
        print(f"{contender}: {result[contender]}", flush=True)
    if "ray" in result:
        for kind in contenders:
            if kind != "ray":
                # > 1: Ray is faster than this single-process loop.
                result[f"ray_vs_{kind}"] = round(result[kind]["s"] / result["ray"]["s"], 2)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workdir", default="/tmp/steam_ray_bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-actors", type=int, default=None)
    parser.add_argument(
        "--contenders",
        default="plain,encoder,ray",
        help="comma-separated, run in this order: plain, encoder (the baselines), ray",
    )
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(run_one(args.one, args.rows, args.workdir, args.tokenizer_actors)))
        return
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown or not contenders:
        parser.error(f"--contenders: choose from {', '.join(CONTENDERS)}")
    run(args.rows, args.workdir, args.seed, args.tokenizer_actors, contenders)


if __name__ == "__main__":
    main()
