"""Ray Train (1 worker) and our recipe's step vs a plain PyTorch loop: same model, batches,
collate and optimizer.

Both sides train MiniLM on the same fixed-length rows (so every batch has the same shape
whatever order Ray Data delivers them in), with ``PadCollate`` and AdamW, for --steps timed
steps after --warmup untimed ones. Ray's side reads the rows from Parquet through
``get_dataset_shard("train").iter_torch_batches`` inside a TorchTrainer worker, so the figure
includes Ray Data ingest and the Train worker; start-up (cluster, worker group) is reported
apart. The recipe contender runs ``FineTuneRecipe.train_step`` (our step: loss, backward, grad
clipping, AdamW, LR schedule) in-process on the same batches: the step loop's own cost, without
Ray. Run: ``.venv/bin/python benchmarks/bench_train_overhead.py`` (``--only plain,recipe`` for
the step-loop pair alone).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from steam_ray.config import OFFLINE_MODEL_NAME, TrainConfig, resolve_model
from steam_ray.train.data import Batch, PadCollate
from steam_ray.train.model import load_model


def make_rows(rows: int, seq_len: int, seed: int) -> tuple[list[list[int]], list[int]]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 20000, size=(rows, seq_len)).tolist()
    return ids, rng.integers(0, 2, size=rows).tolist()


def timed_steps(model: torch.nn.Module, batches: Any, warmup: int, steps: int) -> tuple[float, int]:
    """Train on batches; time the `steps` after `warmup`. Returns (seconds, rows timed)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    it = iter(batches)
    rows = 0
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        b: Batch = next(it)
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        torch.nn.functional.cross_entropy(out.logits, b["labels"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            rows += int(b["labels"].shape[0])
    return time.perf_counter() - start, rows


def host_batches(args: argparse.Namespace) -> Iterator[Batch]:
    ids, labels = make_rows(args.rows, args.seq_len, 0)
    collate = PadCollate(0)
    return (
        collate(
            {
                "input_ids": np.array(ids[i : i + args.batch_size], dtype=np.int32),
                "label": np.array(labels[i : i + args.batch_size]),
            }
        )
        for i in range(0, args.rows, args.batch_size)
    )


def plain(args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(resolve_model(OFFLINE_MODEL_NAME))
    seconds, rows = timed_steps(model, host_batches(args), args.warmup, args.steps)
    return rows / seconds


def recipe(args: argparse.Namespace) -> float:
    """``FineTuneRecipe.train_step`` on the plain loop's batches (rank 0 of 1, CPU, no Ray)."""
    from steam_ray.train.recipe import FineTuneRecipe

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        model=OFFLINE_MODEL_NAME,
        batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        lr=1e-5,
        class_weighted=False,
    )
    run = {"train_rows": args.rows, "train_tokens": args.rows * args.seq_len}
    rec = FineTuneRecipe(cfg, {**run, "train_positive": 1, "train_negative": 1})
    rec.setup()
    it = host_batches(args)
    start, rows = 0.0, 0
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            start = time.perf_counter()
        b = next(it)
        float(rec.train_step([b], int(b["labels"].shape[0])))  # a host sync, as a log line
        rows += int(b["labels"].shape[0]) if i >= args.warmup else 0
    return rows / (time.perf_counter() - start)


def ray_worker(config: dict[str, Any]) -> dict[str, float]:
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(load_model(resolve_model(OFFLINE_MODEL_NAME)))
    shard = ray.train.get_dataset_shard("train")
    batches = shard.iter_torch_batches(
        batch_size=config["batch_size"], collate_fn=PadCollate(0), drop_last=True
    )
    seconds, rows = timed_steps(model, batches, config["warmup"], config["steps"])
    # Returned, not reported: Train V2 keeps only metrics attached to checkpoints.
    return {"samples_per_s": rows / seconds, "seconds": seconds}


def with_ray(args: argparse.Namespace) -> tuple[float, float]:
    import ray
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ids, labels = make_rows(args.rows, args.seq_len, 0)
    tmp = tempfile.mkdtemp(prefix="bench-overhead-")
    table = pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())), "label": labels})
    pq.write_table(table, os.path.join(tmp, "part-0.parquet"))
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={
            "threads": args.threads,
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "steps": args.steps,
        },
        # Fractional CPU: Ray Data's read tasks need a CPU slot beside the worker.
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=os.path.join(tmp, "runs"), name="bench"),
        datasets={"train": ray.data.read_parquet(tmp + "/part-0.parquet")},
    )
    result = trainer.fit()
    wall = time.perf_counter() - t0
    ray.shutdown()
    assert result.return_value is not None, result.error
    return float(result.return_value["samples_per_s"]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description="Ray Train / recipe vs plain PyTorch loop overhead")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="plain,recipe,ray", help="contenders, comma-separated")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of every contender")
    args = ap.parse_args()
    assert (args.warmup + args.steps) * args.batch_size <= args.rows, "not enough rows"
    only = set(args.only.split(","))
    figures: dict[str, list[float]] = {"plain": [], "recipe": [], "ray": []}
    for _ in range(args.repeats):
        figures["plain"].append(plain(args))
        print(f"plain PyTorch loop: {figures['plain'][-1]:.2f} samples/s", flush=True)
        if "recipe" in only:
            figures["recipe"].append(recipe(args))
            print(f"recipe train_step: {figures['recipe'][-1]:.2f} samples/s", flush=True)
        if "ray" in only:
            ray_sps, wall = with_ray(args)
            figures["ray"].append(ray_sps)
            print(f"Ray Train 1 worker: {ray_sps:.2f} samples/s (wall incl. start-up {wall:.1f}s)")
    # Plain again after: CPU clock/thermal drift shows up as a plain-vs-plain gap.
    figures["plain"].append(plain(args))
    print(f"plain PyTorch loop (repeat): {figures['plain'][-1]:.2f} samples/s")
    ref = float(np.mean(figures["plain"]))
    for name in ("recipe", "ray"):
        if figures[name]:
            runs = ", ".join(f"{(ref / v - 1) * 100:+.1f}%" for v in figures[name])
            print(f"{name} overhead vs mean plain: {runs} (goal <= 5%)")


if __name__ == "__main__":
    main()
