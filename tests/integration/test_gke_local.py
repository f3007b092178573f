"""The GKE job chain on a local stand-in of its real shape, through ``ray job submit``:

* an autoscaling cluster like cluster/raycluster.yaml: a 0-CPU head (token auth) and a CPU
  worker type from 0 to 2 nodes, the real autoscaler launching real raylets
  (tests/autoscaling.py);
* every input and output a ``gs://steam-ray-data/...`` URI on a real GCS JSON-API server
  (fake-gcs-server, tests/gcs_emulator.py), reached through ``STORAGE_EMULATOR_HOST``.

The jobs run with the entrypoints of cluster/rayjob-*.yaml (the bucket is the same; the model is
the packaged MiniLM, sizes cut down, CPU instead of GPU), then the RayService's own
serveConfigV2 is deployed (GPU -> CPU, one replica, one proxy: the fake nodes share one
network namespace) and answers ``POST /predict``. One module fixture: the chain shares it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import autoscaling
import gcs_emulator
import pytest
import ray_procs as rp
import yaml

from steam_ray import cluster, storage

pytestmark = pytest.mark.integration

BUCKET = "steam-ray-data"
WORKER_CPUS, MAX_WORKERS = 2, 2
CLUSTER_DIR = rp.REPO / "cluster"


@dataclass
class Chain:
    em: gcs_emulator.GcsEmulator
    ray: autoscaling.LocalAutoscalingCluster
    runtime_env: Path
    model: str
    logs: Path


def _entrypoint(manifest: str, drop: tuple[str, ...] = ()) -> list[str]:
    """The RayJob's own entrypoint, run from the uploaded working dir instead of the image."""
    spec = yaml.safe_load((CLUSTER_DIR / manifest).read_text())["spec"]
    args = shlex.split(spec["entrypoint"])
    args = [a.replace("/home/ray/steam_ray/jobs/", "jobs/") for a in args]
    for flag in drop:  # a flag and its value
        i = args.index(flag)
        del args[i : i + 2]
    return args


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Iterator[Chain]:
    logs = tmp_path_factory.mktemp("gke")
    with gcs_emulator.serving(logs / "fake-gcs.log", BUCKET) as em:
        yield from _chain_on(em, logs, minilm_path)


def _chain_on(em: gcs_emulator.GcsEmulator, logs: Path, minilm_path: str) -> Iterator[Chain]:
    # What the manifests declare (tests/unit/test_ray_cluster.py), for this cluster's size.
    env = {
        **em.env(),
        cluster.MAX_CPUS_ENV: str(WORKER_CPUS * MAX_WORKERS),
        cluster.MAX_GPUS_ENV: "0",
    }
    # Idle nodes go after 60 s (the manifests: 120 s): a STRICT_SPREAD group is placed all at
    # once, and with 15 s its first node was removed as idle before the second one joined.
    ray_cluster = autoscaling.start(
        logs, worker_cpus=WORKER_CPUS, max_workers=MAX_WORKERS, idle_timeout_s=60, extra_env=env
    )
    try:
        yield Chain(em, ray_cluster, rp.runtime_env_file(logs, env), minilm_path, logs)
    finally:
        ray_cluster.stop()


def _submit(chain: Chain, args: list[str], name: str, timeout: float = 900) -> str:
    sid = f"{name}-{uuid.uuid4().hex[:6]}"
    proc = chain.ray.submit(args, chain.runtime_env, sid, timeout=timeout)
    out = proc.stdout + proc.stderr
    (chain.logs / f"{sid}.log").write_text(out)
    assert proc.returncode == 0 and f"Job '{sid}' succeeded" in out, out[-8000:]
    return out


def _actors(chain: Chain, contains: str) -> list[dict[str, Any]]:
    status, body = rp.http_get(f"{chain.ray.dashboard}/api/v0/actors?limit=1000", chain.ray.token)
    assert status == 200, body
    rows: list[dict[str, Any]] = body["data"]["result"]["result"]
    return [r for r in rows if contains in str(r.get("class_name"))]


def _upload_raw_csv(tmp: Path) -> None:
    sys.path.insert(0, str(rp.REPO / "benchmarks"))
    from synth import generate_steam_csv

    local = tmp / "steam_reviews.csv"
    generate_steam_csv(local, rows=2400, seed=3)
    storage.write_text(f"gs://{BUCKET}/raw/steam_reviews.csv", local.read_text())


def test_prepare_on_workers_scaled_from_zero(chain: Chain, tmp_path: Path) -> None:
    _upload_raw_csv(tmp_path)
    assert chain.ray.alive_workers() == []  # nothing runs on the 0-CPU head
    args = _entrypoint("rayjob-prepare.yaml")
    # Batches of 200 rows: the pool gets queued work to grow on (2,400 rows would be one).
    sized = ["--max-length", "48", "--csv-chunk-mb", "0.1", "--set", "data.batch_size=200"]
    _submit(chain, [*args, "--model", chain.model, *sized], "prepare")
    assert chain.ray.workers_ever(), "no worker node was started"
    tokenizers = _actors(chain, "TokenizeBatch")
    assert len(tokenizers) > 1, f"one tokenizer actor for the whole input: {tokenizers}"
    manifest = storage.read_json(f"gs://{BUCKET}/prepared/distilbert-256/manifest.json")
    assert manifest["splits"]["train"]["rows"] > 0
    listed = chain.em.objects(BUCKET, "prepared/distilbert-256/train/")
    names = [n for n in listed if not n.endswith("/")]  # "dir/": Arrow's directory markers
    assert names and all(n.endswith(".parquet") for n in names), listed


def test_sweep_on_the_autoscaling_cluster_registers_its_best(chain: Chain) -> None:
    """4 short ASHA trials, no --max-concurrent (sized from what the cluster can grow to, 0
    CPUs at submit): every trial ends, the job succeeds (it failed with a bare [Errno 2] once
    the trials had finished), the best is registered, and a stopped trial's TensorBoard files
    are on GCS.

    Two at a time: ``tune.reserve_cpus=2`` keeps 2 of the cluster's 4 CPUs out of the sizing.
    Each trial brings ~6 Ray processes (trial, Train controller, worker, data split
    coordinator, W&B...); with 3-4 at once on 2 real cores, worker start-up slowed into a storm
    of restarted workers (load ~110) and a sweep that never finished."""
    args = _entrypoint("rayjob-tune.yaml", drop=("--max-concurrent", "--num-samples"))
    args += ["--num-samples", "4", "--model", chain.model, "--no-gpu", "--num-workers", "1"]
    args += ["--cpus-per-worker", "1", "--max-steps", "4", "--eval-every-steps", "2"]
    args += ["--set", "tune.reserve_cpus=2"]
    _submit(chain, args, "tune", timeout=1200)
    result = storage.read_json(f"gs://{BUCKET}/tune/result.json")
    assert len(result["trials"]) == 4 and result["max_concurrent"] == 2  # (4 - 2) / 1 CPU
    assert all(t["status"] == "TERMINATED" for t in result["trials"]), result["trials"]
    assert result["registered"] is not None and result["best_checkpoint"].startswith("gs://")
    best = storage.read_json(f"gs://{BUCKET}/registry/steam-sentiment/best.json")
    assert best["version"] == result["registered"]["version"]
    stopped = [t for t in result["trials"] if t["stopped_early"]]
    for trial in stopped or result["trials"][:1]:
        prefix = f"tune/trial_{trial['trial_id']}/"
        events = [n for n in chain.em.objects(BUCKET, prefix) if "tfevents" in n]
        assert events, f"no TensorBoard files of trial {trial['trial_id']} on the object store"


def _serve_config(tmp: Path, port: int) -> Path:
    """The RayService's serveConfigV2, cut to this machine: CPU, one replica, one proxy."""
    spec = yaml.safe_load((CLUSTER_DIR / "rayservice.yaml").read_text())["spec"]
    cfg = yaml.safe_load(spec["serveConfigV2"])
    app = cfg["applications"][0]
    app["args"]["config"].update(num_gpus=0.0, num_cpus=1.0, port=port, host="127.0.0.1")
    app["args"]["config"]["autoscaling"].update(min_replicas=1, max_replicas=1)
    for deployment in app["deployments"]:
        options = deployment["ray_actor_options"]
        options.update(num_gpus=0.0, num_cpus=min(float(options.get("num_cpus", 1)), 1.0))
        if "autoscaling_config" in deployment:
            deployment["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    cfg["proxy_location"] = "HeadOnly"
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_rayservice_config_deploys_and_predicts_then_workers_scale_down(
    chain: Chain, tmp_path: Path
) -> None:
    port = rp.free_port()
    config = _serve_config(tmp_path, port)
    _submit(chain, ["python", "jobs/deploy.py", "--config-file", str(config)], "deploy")
    body = json.dumps({"reviews": ["Great co-op game, hours of fun.", "Crashes all the time."]})
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        answer = json.loads(resp.read())
    assert len(answer["predictions"]) == 2
    stop = "import ray; from ray import serve; ray.init(); serve.shutdown()"
    _submit(chain, ["python", "-c", stop], "serve-shutdown")
    chain.ray.wait_workers(0, timeout=300)  # idle workers go (idle timeout 60 s)


def _wait_for_checkpoint(chain: Chain, prefix: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("/checkpoint_" in n for n in chain.em.objects(BUCKET, prefix)):
            return
        time.sleep(2)
    raise TimeoutError(f"no checkpoint under gs://{BUCKET}/{prefix} after {timeout}s")


def test_train_survives_a_worker_node_killed_mid_run(chain: Chain) -> None:
    """2 workers STRICT_SPREAD (one per node); once a checkpoint is on the object store a
    worker node's raylet is killed: the autoscaler replaces the node (tests/fake_provider.py)
    and the run goes on there from that checkpoint."""
    args = _entrypoint("rayjob-train.yaml")
    args += ["--model", chain.model, "--no-gpu", "--num-workers", "2", "--cpus-per-worker", "1"]
    args += ["--placement-strategy", "STRICT_SPREAD", "--max-steps", "12"]
    args += ["--eval-every-steps", "4", "--batch-size", "8", "--token-budget", "256"]
    sid = f"train-{uuid.uuid4().hex[:6]}"
    cmd = [rp.RAY, "job", "submit", f"--address={chain.ray.dashboard}", f"--submission-id={sid}"]
    cmd += [f"--working-dir={rp.REPO}", f"--runtime-env={chain.runtime_env}", "--", *args]
    log = (chain.logs / f"{sid}.log").open("w")
    proc = subprocess.Popen(cmd, env=chain.ray.env, cwd=rp.REPO, stdout=log, stderr=log)
    try:
        _wait_for_checkpoint(chain, "runs/distilbert-steam/")
        workers = chain.ray.alive_workers()
        assert len(workers) == 2, workers
        before = {n["node_id"] for n in chain.ray.workers_ever()}
        victims = chain.ray.worker_raylet_pids()
        assert victims, "no worker raylet found"
        os.kill(victims[0], signal.SIGKILL)
        assert proc.wait(timeout=900) == 0, (chain.logs / f"{sid}.log").read_text()[-8000:]
        replacements = {n["node_id"] for n in chain.ray.workers_ever()} - before
        assert replacements, "the run finished without a replacement node"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    record = storage.read_json(f"gs://{BUCKET}/runs/result.json")
    assert record["restarts"] >= 1 and record["resumed_from_step"] > 0, record
    assert record["latest_checkpoint"].endswith("checkpoint_step000012"), record
    assert storage.exists(f"{record['best_checkpoint']}/model.safetensors")
