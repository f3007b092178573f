"""Ray Tune sweeps over Ray Train runs on the shared 2-node local cluster (4 logical CPUs)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import write_dataset

from steam_ray.config import Config
from steam_ray.tune import sweep

pytestmark = pytest.mark.integration

GOOD_LR = 3e-4
HOPELESS_LR = 1e-9


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    out = tmp_path_factory.mktemp("tune-data")
    write_dataset(out, minilm_path, rows=(192, 64, 32), max_length=48)
    return out


def sweep_config(data_dir: Path, output: Path, **tune: Any) -> Config:
    """4 tiny trials: 1 worker each; 1.5 CPUs per trial so two run at once on 4 CPUs with one
    CPU left for Ray Data, and a third can start only once a finished/stopped one gave its
    CPUs back (a leaked placement group would hang the sweep)."""
    points = [
        {"lr": GOOD_LR, "warmup_ratio": 0.0},
        {"lr": GOOD_LR * 0.7, "warmup_ratio": 0.0},
        {"lr": GOOD_LR * 0.5, "warmup_ratio": 0.0},
        {"lr": HOPELESS_LR, "warmup_ratio": 0.0},  # learns nothing: ASHA must cut it
    ]
    base: dict[str, Any] = {
        "output": str(output),
        "num_samples": 4,
        "max_concurrent": 2,
        "reduction_factor": 2,
        "space": {
            "lr": {"type": "loguniform", "low": 1e-9, "high": 1e-3},
            "warmup_ratio": {"type": "uniform", "low": 0.0, "high": 0.2},
        },
        "points_to_evaluate": points,
        "train": {
            "data": str(data_dir),
            "num_workers": 1,
            "cpus_per_worker": 1.5,
            "max_steps": 8,
            "eval_every_steps": 2,
            "batch_size": 16,
            "log_every_steps": 2,
            "keep_checkpoints": 1,
        },
    }
    base.update(tune)
    return Config.model_validate({"tune": base})


def wait_for_free_cluster(timeout: float = 90.0) -> dict[str, float]:
    """Poll until every CPU is available again; returns the last available resources."""
    import ray

    total = ray.cluster_resources()["CPU"]
    deadline = time.monotonic() + timeout
    available: dict[str, float] = {}
    while time.monotonic() < deadline:
        available = ray.available_resources()
        if math.isclose(available.get("CPU", 0.0), total):
            break
        time.sleep(1)
    return available


def assert_no_live_placement_groups() -> None:
    import ray.util

    table = ray.util.placement_group_table()
    live = {pg_id: pg["state"] for pg_id, pg in table.items() if pg["state"] != "REMOVED"}
    assert not live, f"placement groups left behind: {live}"


def test_asha_stops_hopeless_trial_and_frees_its_resources(
    ray_cluster: Any, data_dir: Path, tmp_path: Path
) -> None:
    import ray
    from ray.util.state import list_actors

    out = tmp_path / "sweep"
    record = sweep(sweep_config(data_dir, out))

    # result.json on disk is what sweep() returned.
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(record, default=str))
    assert on_disk["metric"] == "macro_f1" and on_disk["mode"] == "max"
    trials = {t["trial_id"]: t for t in on_disk["trials"]}
    assert len(trials) == 4
    for t in trials.values():
        assert set(t) >= {
            "trial_id",
            "config",
            "metrics",
            "best_metrics",
            "status",
            "iterations",
            "stopped_early",
            "checkpoint",
        }
        assert t["status"] == "TERMINATED", t
        assert "macro_f1" in t["metrics"] and "macro_f1" in t["best_metrics"]
        # The trial's checkpoint is its best one: an HF checkpoint with that score.
        ckpt = Path(t["checkpoint"])
        assert (ckpt / "config.json").is_file() and (ckpt / "model.safetensors").is_file()
        saved = json.loads((ckpt / "metrics.json").read_text())
        assert saved["macro_f1"] == pytest.approx(t["best_metrics"]["macro_f1"])
        assert saved["step"] == t["best_metrics"]["step"]
        # Each trial's Ray Train run lives in the Tune trial dir under OUTPUT (TensorBoard).
        assert ckpt.parent.parent == out
        assert list((ckpt.parent / "tensorboard").glob("events.out.tfevents.*"))

    hopeless = next(t for t in trials.values() if t["config"]["lr"] == HOPELESS_LR)
    assert hopeless["stopped_early"], hopeless
    assert hopeless["metrics"]["step"] < 8
    finished = [t for t in trials.values() if not t["stopped_early"]]
    assert finished and all(t["metrics"]["step"] == 8 for t in finished)

    # The sweep's best is the trial whose best checkpoint scores best (argmax).
    best_id = max(trials, key=lambda i: trials[i]["best_metrics"]["macro_f1"])
    assert on_disk["best_trial_id"] == best_id
    assert on_disk["best_checkpoint"] == trials[best_id]["checkpoint"]
    assert on_disk["best_config"] == trials[best_id]["config"]
    assert on_disk["best_metrics"] == trials[best_id]["best_metrics"]

    # Every CPU is back, no placement group is left, every Train controller is gone.
    available = wait_for_free_cluster()
    assert available.get("CPU") == ray.cluster_resources()["CPU"], available
    assert_no_live_placement_groups()
    controllers = list_actors(filters=[("class_name", "=", "TrainController")], limit=1000)
    assert controllers and all(a.state == "DEAD" for a in controllers)

    history = json.loads((out / "history.json").read_text())
    steps = [p["step"] for p in history[hopeless["trial_id"]]]
    assert steps == sorted(steps) and steps[-1] == hopeless["metrics"]["step"]
