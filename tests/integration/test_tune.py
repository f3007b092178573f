"""Ray Tune sweeps over Ray Train runs on the shared 2-node local cluster (4 logical CPUs)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from train_fixtures import write_dataset
from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.config import Config, load_config
from steam_ray.errors import SteamRayError
from steam_ray.tune import sweep
from steam_ray.tune_report import PLOTS

pytestmark = pytest.mark.integration

GOOD_LR = 3e-4
HOPELESS_LR = 1e-9
# ROC-AUC, not macro-F1: after a few steps every sane trial still predicts the majority class
# at the 0.5 threshold (macro-F1 0.42 for all, a tie ASHA cannot cut) while its ROC-AUC is
# already ~0.99; the hopeless trial's stays where the random head put it.
METRIC = "roc_auc"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    out = tmp_path_factory.mktemp("tune-data")
    write_dataset(out, minilm_path, rows=(192, 64, 32), max_length=48)
    return out


def sweep_config(data_dir: Path, output: Path, **tune: Any) -> Config:
    """3 tiny trials, 2 at a time, 1 worker of 1 CPU each: 2 CPUs stay free for Ray Data (its
    file listing task needs a whole CPU, so trial drivers must not take CPU fractions). The
    hopeless trial starts last, so the two good ones have filled ASHA's rungs before it."""
    points = [
        {"lr": GOOD_LR, "warmup_ratio": 0.0},
        {"lr": GOOD_LR * 0.5, "warmup_ratio": 0.0},
        {"lr": HOPELESS_LR, "warmup_ratio": 0.0},  # learns nothing: ASHA must cut it
    ]
    base: dict[str, Any] = {
        "output": str(output),
        "metric": METRIC,
        "num_samples": 3,
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
            "cpus_per_worker": 1,
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


CONTROLLERS_BEFORE: set[str] = set()


def _train_controllers() -> list[Any]:
    from ray.util.state import list_actors

    return list(list_actors(filters=[("class_name", "=", "TrainController")], limit=1000))


@pytest.fixture(scope="module")
def other_ray_instance(ray_cluster: Any) -> Iterator[None]:
    """A second, unrelated local Ray on the machine during the sweep (a developer's, another
    test's). Ray Train's placement-group cleaner auto-detects its cluster, failed with "Found
    multiple active Ray instances", and an ASHA-stopped trial kept its CPUs; see
    steam_ray.tune.pin_cluster_address."""
    from ray._private.services import find_gcs_addresses

    def gcs_count() -> int:
        find_gcs_addresses.cache_clear()  # Ray caches a non-empty answer
        return len(find_gcs_addresses())

    before = gcs_count()
    code = (
        "import ray, time; ray.init(address='local', num_cpus=0, include_dashboard=False); "
        "time.sleep(3600)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while gcs_count() <= before:
            assert proc.poll() is None, "the second Ray instance did not start"
            assert time.monotonic() < deadline, "the second Ray instance did not start"
            time.sleep(1)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def asha_sweep(
    ray_cluster: Any,
    other_ray_instance: None,
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any], Path]:
    """One ASHA sweep, shared: its result, its report and its registry entry are checked."""
    root = tmp_path_factory.mktemp("tune-asha")
    out, registry = root / "sweep", root / "registry"
    # Other tests' Train runs share the cluster: only this sweep's controllers are checked.
    CONTROLLERS_BEFORE.update(a.actor_id for a in _train_controllers())
    record = sweep(sweep_config(data_dir, out, registry=str(registry)))
    return out, record, registry


def test_asha_stops_hopeless_trial_and_frees_its_resources(
    asha_sweep: tuple[Path, dict[str, Any], Path],
) -> None:
    import ray

    out, record, _ = asha_sweep

    # result.json on disk is what sweep() returned.
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(record, default=str))
    assert on_disk["metric"] == METRIC and on_disk["mode"] == "max"
    trials = {t["trial_id"]: t for t in on_disk["trials"]}
    assert len(trials) == 3
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
        assert METRIC in t["metrics"] and METRIC in t["best_metrics"]
        # The trial's checkpoint is its best one: an HF checkpoint with that score.
        ckpt = Path(t["checkpoint"])
        assert (ckpt / "config.json").is_file() and (ckpt / "model.safetensors").is_file()
        saved = json.loads((ckpt / "metrics.json").read_text())
        assert saved[METRIC] == pytest.approx(t["best_metrics"][METRIC])
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
    best_id = max(trials, key=lambda i: trials[i]["best_metrics"][METRIC])
    assert on_disk["best_trial_id"] == best_id
    assert on_disk["best_checkpoint"] == trials[best_id]["checkpoint"]
    assert on_disk["best_config"] == trials[best_id]["config"]
    assert on_disk["best_metrics"] == trials[best_id]["best_metrics"]

    # Every CPU is back, no placement group is left, every Train controller is gone.
    available = wait_for_free_cluster()
    assert available.get("CPU") == ray.cluster_resources()["CPU"], available
    assert_no_live_placement_groups()
    # Controllers hold no CPU, so the check above can pass while one is still exiting.
    deadline = time.monotonic() + 120
    while True:
        controllers = [a for a in _train_controllers() if a.actor_id not in CONTROLLERS_BEFORE]
        alive = [(a.actor_id, a.state) for a in controllers if a.state != "DEAD"]
        if (controllers and not alive) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert controllers and not alive, f"Train controllers not dead: {alive}"

    history = json.loads((out / "history.json").read_text())
    steps = [p["step"] for p in history[hopeless["trial_id"]]]
    assert steps == sorted(steps) and steps[-1] == hopeless["metrics"]["step"]


def test_sweep_registers_its_best(asha_sweep: tuple[Path, dict[str, Any], Path]) -> None:
    from steam_ray.registry import Registry

    out, record, registry = asha_sweep
    registered = record["registered"]
    assert registered["promoted"] is True  # the first version of the model
    mv = Registry(str(registry)).resolve("steam-sentiment:best")
    assert mv.version == registered["version"]
    assert mv.metrics[METRIC] == pytest.approx(record["best_metrics"][METRIC])
    assert mv.lineage["trial_id"] == record["best_trial_id"]
    assert mv.lineage["sweep"] == str(out)
    assert mv.lineage["data_fingerprint"] and mv.lineage["git_sha_registered"] is not None
    assert mv.config["train"]["lr"] == record["best_config"]["lr"]
    # A plain HF checkpoint: model weights and tokenizer, no optimizer state.
    files = {p.name for p in Path(mv.path).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert "training_state.pt" not in files


def test_report_renders_in_a_browser(
    asha_sweep: tuple[Path, dict[str, Any], Path], chromium: Any
) -> None:
    out, _, _ = asha_sweep
    runner = CliRunner()
    res = runner.invoke(app, ["tune", "report", str(out)])
    assert res.exit_code == 0, res.output
    report = out / "report.html"
    assert report.is_file()
    for name in PLOTS:
        assert (out / name).stat().st_size > 1000, name
    driver = chromium
    driver.get(report.as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map("
        "i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    text = driver.find_element("tag name", "body").text
    assert sorted(src for src, *_ in images) == sorted(PLOTS)
    for src, complete, width, height in images:
        assert complete and width > 0 and height > 0, src
    assert "Sweep report" in text and METRIC in text


def _experiment_state_terminated(out: Path) -> set[str]:
    """Trial ids the Tune driver has durably recorded as TERMINATED."""
    done: set[str] = set()
    for path in out.glob("experiment_state-*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for entry in state.get("trial_data", []):
            blob = json.dumps(entry)
            for trial_dir in out.glob("trial_*"):
                trial_id = trial_dir.name.removeprefix("trial_")
                if trial_id in blob and "TERMINATED" in blob:
                    done.add(trial_id)
    return done


@pytest.mark.full
def test_resume_after_driver_killed(
    ray_cluster: Any, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sweep"
    cfg_file = tmp_path / "tune.yaml"
    # The data dir as a user writes it: relative to where they run the command. Trials run in
    # their trial dirs (and Ray Data lists files in other workers): the sweep must pin it.
    monkeypatch.chdir(tmp_path)
    cfg = sweep_config(
        Path(os.path.relpath(data_dir, tmp_path)),
        out,
        num_samples=3,
        max_concurrent=1,
        scheduler="fifo",
        search="random",
        points_to_evaluate=[],
    )
    tune = cfg.tune.model_dump(mode="json")
    tune["train"].update({"max_steps": 4, "wandb": False})
    cfg_file.write_text(yaml.safe_dump({"tune": tune}))
    env = {
        **os.environ,
        # The session cluster's auth settings come from this environment: inherit them.
        "RAY_ADDRESS": ray_cluster.address,
        "TUNE_GLOBAL_CHECKPOINT_S": "1",  # save the experiment state often: kill it any time
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    cmd = [sys.executable, "-m", "steam_ray.cli", "tune", "--config", str(cfg_file)]
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 1500  # a trial took >10 min on the contended host
        finished: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            finished = _experiment_state_terminated(out)
            if finished:
                break
            time.sleep(1)
        assert finished, (
            f"no trial finished; driver log:\n{(tmp_path / 'driver.log').read_text()[-3000:]}"
        )
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-sweep
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "result.json").exists()  # the sweep really was cut short
    finished_attempts = {t: (out / f"trial_{t}" / "attempts.json").read_text() for t in finished}
    finished_ckpts = {
        t: sorted(p.name for p in (out / f"trial_{t}").glob("checkpoint_*")) for t in finished
    }
    wait_for_free_cluster()

    # A fresh sweep into the same dir is refused; --resume continues it.
    with pytest.raises(SteamRayError, match="--resume"):
        sweep(load_config(str(cfg_file)))
    record = sweep(load_config(str(cfg_file)), resume=True)
    trials = {t["trial_id"]: t for t in record["trials"]}
    assert len(trials) == 3 and all(t["status"] == "TERMINATED" for t in trials.values())
    assert all(t["metrics"]["step"] == 4 for t in trials.values())
    for trial_id in finished:
        # Not re-run: its Ray Train run was started once and wrote no new checkpoint.
        assert (out / f"trial_{trial_id}" / "attempts.json").read_text() == finished_attempts[
            trial_id
        ]
        assert finished_attempts[trial_id].strip() == "1"
        assert (
            sorted(p.name for p in (out / f"trial_{trial_id}").glob("checkpoint_*"))
            == finished_ckpts[trial_id]
        )
    assert record["best_trial_id"] in trials


def test_asha_sweep_needs_the_state_api(ray_cluster: Any) -> None:
    """ASHA-stopped trials' placement groups are freed through the state API (the dashboard):
    the shared cluster has it; a Ray without its dashboard is refused before any trial runs
    (measured without this check: the sweep hung once stopped trials held every CPU)."""
    from steam_ray.tune import require_state_api

    require_state_api()  # the shared cluster: answers
    code = (
        "import ray\n"
        "from steam_ray.tune import require_state_api\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
        "try:\n"
        "    require_state_api(timeout_s=10)\n"
        "except Exception as exc:\n"
        "    print(f'REFUSED {type(exc).__name__}: {exc}')\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert "REFUSED ConfigError" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert "dashboard" in proc.stdout and "--scheduler fifo" in proc.stdout


PROBE = """
import json, os, sys
import ray

ray.init(address="local", num_cpus=1)  # as `steam-ray tune` and bench_tune start one


@ray.remote(num_cpus=0)
class Probe:
    def query(self, actor_id, pin):
        from ray.util.state import get_actor

        if pin:
            from ray.train.v2._internal.constants import get_env_vars_to_propagate

            from steam_ray.tune import pin_cluster_address

            pin_cluster_address()
            assert get_env_vars_to_propagate()["RAY_ADDRESS"] == os.environ["RAY_ADDRESS"]
        try:
            state = get_actor(actor_id, timeout=30)
        except ConnectionError as exc:
            return f"ConnectionError: {exc}"
        return "found" if state is not None else "not found"


# One process each (an actor is one): the pinned one must not lend the other its env.
unpinned, pinned = Probe.remote(), Probe.remote()
actor_id = pinned._actor_id.hex()
out = {"unpinned": ray.get(unpinned.query.remote(actor_id, False))}
out["pinned"] = ray.get(pinned.query.remote(actor_id, True))
print("PROBE " + json.dumps(out), flush=True)
"""


def test_pinned_address_reaches_the_state_api_with_two_rays(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """The mechanism behind pin_cluster_address, in the worker processes of a Ray started by
    ``ray.init(address="local")`` while another Ray runs on the machine (this session's):
    there the state API (what Ray Train's placement-group cleaner calls) does not reach its
    own cluster, and does once RAY_ADDRESS is pinned, which Ray Train then forwards to its
    controller and workers."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(repo)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("PROBE "))
    # Unpinned, the query fails ("Found multiple active Ray instances", seen in bench_tune's
    # cleaner logs) or asks the other cluster, where the live actor is "not found" (seen
    # here): a cleaner would then free a running trial's placement group.
    assert out["unpinned"] != "found", out
    assert out["pinned"] == "found", out
