"""End-to-end training on the real 2-node local Ray cluster (CPU, gloo, 2 DDP workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import run_isolated, write_dataset

from steam_ray.config import TrainConfig
from steam_ray.errors import ConfigError
from steam_ray.train.trainer import train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    out = tmp_path_factory.mktemp("train-data")
    write_dataset(out, minilm_path, rows=(192, 64, 32), max_length=64)
    return out


def _cfg(data_dir: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "data": str(data_dir),
        "output": str(out),
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "max_steps": 6,
        "batch_size": 8,
        "eval_every_steps": 3,
        "log_every_steps": 2,
        "lr": 1e-4,
        "experiment_name": "run",
    }
    base.update(kw)
    return TrainConfig(**base)


def test_short_run_metrics_checkpoint_result(
    ray_cluster: Any, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = train(_cfg(data_dir, out, class_weighted=True))

    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result, default=str))
    assert result["world_size"] == 2 and result["global_step"] == 6
    assert result["attempts"] == 1 and result["resumed_from_step"] == 0
    for key in ("accuracy", "macro_f1", "roc_auc", "loss"):
        assert result["metrics"][key] is not None, key
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert result["metrics"]["num_examples"] == 64  # all val rows, from both ranks

    best = Path(result["best_checkpoint"])
    assert best.parent == out / "run"
    info = json.loads((best / "steam_ray.json").read_text())
    assert info["world_size"] == 2
    assert info["config"]["class_weighted"] is True
    assert info["data_fingerprint"] and info["tokenizer_fingerprint"]
    assert info["steam_ray_version"] and "saved_at" in info
    assert set(json.loads((best / "metrics.json").read_text())) >= {
        "accuracy",
        "macro_f1",
        "roc_auc",
        "loss",
    }
    assert (best / "training_state.pt").is_file()
    # keep_checkpoints=2 of the 2 reported (steps 3 and 6).
    assert sorted(p.name for p in (out / "run").glob("checkpoint_step*")) == [
        "checkpoint_step000003",
        "checkpoint_step000006",
    ]
    assert list((out / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "run" / "wandb").is_dir()

    # The checkpoint is a plain HF model: load and predict without steam_ray.
    code = (
        "import sys, torch, transformers as t\n"
        f"p = {str(best)!r}\n"
        "m = t.AutoModelForSequenceClassification.from_pretrained(p).eval()\n"
        "tok = t.AutoTokenizer.from_pretrained(p)\n"
        "with torch.no_grad():\n"
        "    out = m(**tok(['great fun game', 'broken refund'], return_tensors='pt',"
        " padding=True))\n"
        "print(tuple(out.logits.shape), m.config.id2label[1])\n"
        "assert not any(k.startswith('steam_ray') for k in sys.modules)\n"
    )
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "(2, 2) positive"


def test_multi_node_ddp_stays_in_sync(ray_cluster: Any, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = train(
        _cfg(
            data_dir,
            out,
            placement_strategy="STRICT_SPREAD",
            token_budget=256,  # length-bucketed batches: ranks get uneven batch counts
            grad_accum_steps=2,
            eval_every_steps=None,
            wandb=False,
        )
    )
    final = result["final_metrics"]
    assert final["step"] == 6
    nodes = final["node_ids"]
    assert len(nodes) == 2 and len(set(nodes)) == 2  # one worker per node
    hashes = final["param_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # identical weights on both ranks
    assert Path(result["best_checkpoint"], "model.safetensors").is_file()


@pytest.mark.full
def test_worker_death_resumes_from_checkpoint(
    ray_cluster: Any, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # Rank 1 os._exit(1)s right after step 4; the last checkpoint is at step 3.
    result = train(_cfg(data_dir, out, faults={"fail_at_step": 4}, max_failures=2, wandb=False))
    assert (out / "run" / "_fail_injected").is_file()
    assert result["attempts"] == 2 and result["restarts"] == 1
    assert result["resumed_from_step"] == 3
    assert result["resumed_from"].endswith("checkpoint_step000003")
    assert result["global_step"] == 6
    info = json.loads((out / "run" / "checkpoint_step000006" / "steam_ray.json").read_text())
    assert [a["resumed_from_step"] for a in info["lineage"]] == [0, 3]
    assert info["global_step"] == 6
    # Every rank wrote its own RNG state into the same checkpoint.
    ckpt = out / "run" / "checkpoint_step000006" / "rank_state"
    assert sorted(p.name for p in ckpt.iterdir()) == ["rank_00000.pt", "rank_00001.pt"]

    # Resuming the named run with another learning rate is refused in the driver.
    with pytest.raises(ConfigError, match=r"cannot resume run .*lr: checkpoint 0.0001, now 0.001"):
        train(_cfg(data_dir, out, lr=1e-3, wandb=False))


def _tb_lrs(run_dir: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("train/lr")}


@pytest.mark.parametrize(
    "mode",
    [
        # 192 rows / 2 ranks = 96 per rank: 10 batches of 10 (the last holds 6), exactly.
        {"batch_size": 10},
        # Windows of 4 rows give one padded batch each (24 per rank), far above the manifest
        # estimate at 80% budget fill: the run must end with its schedule, not train at LR 0.
        {"token_budget": 256, "bucket_window_rows": 4},
    ],
    ids=["fixed-batch", "token-budget"],
)
def test_lr_reaches_zero_exactly_at_the_last_step(
    ray_cluster: Any, data_dir: Path, tmp_path: Path, mode: dict[str, Any]
) -> None:
    out = tmp_path / "out"
    cfg = _cfg(data_dir, out, max_steps=None, eval_every_steps=None, log_every_steps=1, wandb=False)
    result = train(cfg.model_copy(update=mode))
    final = result["final_metrics"]
    last = final["step"]
    assert last == final["total_steps"]
    if "batch_size" in mode:
        assert last == 10
    lrs = _tb_lrs(out / "run")
    assert sorted(lrs) == list(range(1, last + 1))
    assert all(lrs[s] > 0 for s in range(1, last))  # never an optimizer step at LR 0
    assert lrs[last] == 0.0 and final["lr"] == 0.0


def test_mid_epoch_resume_skips_exactly_the_restored_steps(
    ray_cluster: Any, data_dir: Path, minilm_path: str, tmp_path: Path
) -> None:
    import ray.data

    from steam_ray.train.recipe import FineTuneRecipe

    cfg = _cfg(
        data_dir,
        tmp_path,
        model=minilm_path,
        max_steps=None,
        epochs=2,
        batch_size=16,
        grad_accum_steps=4,
        eval_every_steps=None,  # no validation shard here: the test counts steps only
    )
    run = {"run_dir": str(tmp_path), "train_rows": 192, "train_tokens": 4000}
    run |= {"train_positive": 1, "train_negative": 1}
    recipe = FineTuneRecipe(cfg, run)
    recipe.setup()
    shard = ray.data.read_parquet(str(data_dir / "train")).select_columns(["input_ids", "label"])
    # 192 rows / 16 = 12 micro-batches = 3 steps of 4; a resume after 1 step trains 2.
    steps, done = recipe.train_epoch(shard.iterator(), None, skip_steps=1)
    assert (steps, done, recipe.global_step) == (2, False, 2)
    steps, done = recipe.train_epoch(shard.iterator(), None, skip_steps=0)
    assert (steps, done, recipe.global_step) == (3, False, 5)
