"""End-to-end training on the real 2-node local Ray cluster (CPU, gloo, 2 DDP workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import run_isolated, write_dataset

from steam_ray.config import TrainConfig
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
