"""ASHA vs FIFO: one sweep (search space, searcher seed, trials) with and without early stopping.

Both sweeps run ``steam_ray.tune.sweep`` (random search by default, or ``--search optuna``, one
Ray Train run per trial, the default search space of ``TuneConfig``) on the offline sample data
(``steam-ray data prepare --source sample``, prepared here if --data is not given) on one local
Ray cluster, one after the other. Printed per scheduler: trial steps spent (the sum over trials
of the optimizer steps each ran), wall time, the best metric found; then ASHA / FIFO as ratios.
Goal: ASHA spends at most half the trial steps for a best metric within 0.01 of FIFO's.

Run: ``.venv/bin/python benchmarks/bench_tune.py`` (add ``--repeats 2`` for a spread).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from steam_ray.config import Config, DataConfig


def prepare_sample(directory: Path, limit: int, max_length: int) -> str:
    from steam_ray.data.pipeline import prepare

    prepare(
        DataConfig(
            source="sample",
            output=str(directory),
            limit=limit or None,
            max_length=max_length,
            keep_rejected=False,
        )
    )
    return str(directory)


def run_sweep(
    args: argparse.Namespace, data: str, out: Path, scheduler: str, seed: int
) -> dict[str, Any]:
    from steam_ray.tune import sweep

    cfg = Config.model_validate(
        {
            "tune": {
                "output": str(out),
                "num_samples": args.trials,
                "max_concurrent": args.concurrent,
                "scheduler": scheduler,
                "search": args.search,
                "seed": seed,
                "reduction_factor": args.reduction_factor,
                "grace_period_steps": args.eval_every,
                "train": {
                    "data": data,
                    "num_workers": 1,
                    "cpus_per_worker": args.cpus_per_trial,
                    "use_gpu": args.gpus_per_trial > 0,
                    "gpus_per_worker": args.gpus_per_trial or 1.0,
                    **({"model": args.model} if args.model else {}),
                    "max_steps": args.max_steps,
                    "eval_every_steps": args.eval_every,
                    "max_eval_rows": args.eval_rows or None,
                    "log_every_steps": args.eval_every,
                    "keep_checkpoints": 1,
                    "wandb": False,
                    "tensorboard": False,
                },
            }
        }
    )
    t0 = time.perf_counter()
    record = sweep(cfg)
    wall = time.perf_counter() - t0
    steps = sum(int(t["metrics"].get("step", 0) or 0) for t in record["trials"])
    for t in sorted(record["trials"], key=lambda t: t["config"].get("lr", 0.0)):
        best = (t.get("best_metrics") or {}).get("macro_f1")
        print(
            f"  {scheduler} trial {t['trial_id']}: lr {t['config'].get('lr', 0.0):.2e} "
            f"warmup {t['config'].get('warmup_ratio', 0.0):.2f} steps "
            f"{t['metrics'].get('step')} last macro_f1 {t['metrics'].get('macro_f1')} "
            f"best {best} stopped_early {t['stopped_early']}",
            flush=True,
        )
    return {
        "scheduler": scheduler,
        "trial_steps": steps,
        "wall_s": round(wall, 1),
        "best": record["best_metrics"]["macro_f1"] if record["best_metrics"] else None,
        "stopped_early": sum(bool(t["stopped_early"]) for t in record["trials"]),
        "trials": len(record["trials"]),
        "per_trial": [
            {
                "config": t["config"],
                "steps": t["metrics"].get("step"),
                "best": (t.get("best_metrics") or {}).get("macro_f1"),
                "stopped_early": t["stopped_early"],
            }
            for t in record["trials"]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared data dir (default: prepare the sample here)")
    parser.add_argument("--rows", type=int, default=0, help="sample rows to prepare (0: all)")
    parser.add_argument("--max-length", type=int, default=128)
    # 16: with 8, the trials that reach a rung before any other (which async halving lets
    # through) were a large share of the steps (0.60x, RESULTS.md).
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=2)
    # Long enough for macro-F1 to rank learning rates (at 18 steps it ranked noise, see
    # RESULTS.md); the grace period is one evaluation.
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument("--reduction-factor", type=float, default=3.0)
    parser.add_argument(
        "--eval-rows", type=int, default=0, help="validation rows per evaluation (0: all)"
    )
    parser.add_argument("--seed", type=int, default=7)
    # random: both sweeps try exactly the same configurations, so the pair compares only the
    # schedulers; with optuna, trials after TPE's 10 start-up ones follow what each scheduler
    # reported (ASHA reports stopped trials' early scores), which mixes searcher and scheduler.
    parser.add_argument("--search", choices=("optuna", "random"), default="random")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=4, help="logical CPUs of the local cluster")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument(
        "--gpus-per-trial", type=float, default=0.0, help="GPU share per trial (0: CPU trials)"
    )
    parser.add_argument("--model", help="model name or path (default: the config's)")
    parser.add_argument("--json", help="also append each sweep's figures to this JSONL file")
    args = parser.parse_args()

    import ray

    # address="local": a fresh cluster, never one another process started on this machine.
    ray.init(
        address="local",
        num_cpus=args.cpus,
        object_store_memory=512 * 1024**2,
        # With the dashboard: Ray Train frees ASHA-stopped trials' placement groups through
        # the state API it serves (without it this sweep hung, see steam_ray.tune).
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        data = args.data or prepare_sample(Path(tmp) / "data", args.rows, args.max_length)
        for rep in range(args.repeats):
            pair = {}
            # Alternate the order so neither scheduler always runs on the warmer machine.
            order = ("asha", "fifo") if rep % 2 == 0 else ("fifo", "asha")
            for scheduler in order:
                res = run_sweep(args, data, Path(tmp) / f"{scheduler}-{rep}", scheduler, args.seed)
                res["repeat"] = rep
                pair[scheduler] = res
                rows.append(res)
                print(json.dumps(res), flush=True)
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(res) + "\n")
            a, f = pair["asha"], pair["fifo"]
            print(
                f"repeat {rep}: ASHA/FIFO trial steps {a['trial_steps']}/{f['trial_steps']} = "
                f"{a['trial_steps'] / f['trial_steps']:.2f}, wall {a['wall_s']}/{f['wall_s']} s = "
                f"{a['wall_s'] / f['wall_s']:.2f}, best macro_f1 {a['best']:.4f} vs "
                f"{f['best']:.4f} (diff {a['best'] - f['best']:+.4f})",
                flush=True,
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
