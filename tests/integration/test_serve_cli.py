"""`steam-ray serve` as a real process: serves, stops cleanly on a signal, leaves no Ray
process behind; `steam-ray serve build` writes a deterministic, valid Serve config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from serve_fixtures import free_port, make_checkpoint, post

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    env["HF_HUB_OFFLINE"] = "1"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "steam_ray.cli", *args]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("cli-ckpt") / "ckpt", minilm_path, seed=3)


def test_serve_build_is_deterministic_and_valid(checkpoint: Path, tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    outs = []
    for name in ("a.yaml", "b.yaml"):
        out = tmp_path / name
        args = ["serve", "build", "--checkpoint", str(checkpoint), "-o", str(out)]
        args += ["--min-replicas", "1", "--max-replicas", "3", "--port", "8123"]
        proc = subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    config = yaml.safe_load(outs[0])
    ServeDeploySchema.model_validate(config)
    app = config["applications"][0]
    assert app["import_path"] == "steam_ray.serve.app:build_app"
    # The checkpoint ref as given: resolved by build_app where the config is deployed.
    assert app["args"]["ref"]["checkpoint"] == str(checkpoint)
    assert "source" not in app["args"]
    assert config["http_options"]["port"] == 8123
    # CPU replicas (no num_gpus): one deployment holds the routes and the model, and scales.
    (model,) = app["deployments"]
    assert model["name"] == "Ingress"
    assert model["autoscaling_config"]["min_replicas"] == 1
    assert model["autoscaling_config"]["max_replicas"] == 3


def test_serve_build_rejects_a_missing_checkpoint(tmp_path: Path) -> None:
    args = ["serve", "build", "--checkpoint", str(tmp_path / "nope"), "-o", str(tmp_path / "x")]
    proc = subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            continue
    return out


def _start(args: list[str]) -> subprocess.Popen[str]:
    """`steam-ray serve` in its own session (so a failed test can kill all of it)."""
    return subprocess.Popen(
        _cli(*args),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _assert_all_gone(started: list[psutil.Process]) -> None:
    deadline = time.monotonic() + 30
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(1)
    assert _alive(started) == [], "Ray processes left behind"


def _names(procs: list[psutil.Process]) -> str:
    out = []
    for p in procs:
        try:
            out.append(" ".join(p.cmdline()) or p.name())
        except psutil.Error:
            continue
    return "\n".join(out)


GRACE_S = 30


def _load(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            post(f"http://127.0.0.1:{port}/predict", {"reviews": ["great game"]}, timeout=10)
        except httpx.HTTPError:
            time.sleep(0.2)  # the server is going away


# The default (Serve's high-throughput mode: HAProxy in front of the ingress replicas) and
# the classic Python proxy actor, one signal each.
@pytest.mark.parametrize(
    ("sig", "high_throughput"),
    [(signal.SIGTERM, True), (signal.SIGINT, False)],
    ids=["SIGTERM-haproxy", "SIGINT-proxy-actor"],
)
def test_serve_process_stops_cleanly_on_signal(
    checkpoint: Path, tmp_path: Path, sig: signal.Signals, high_throughput: bool
) -> None:
    port = free_port()
    args = ["serve", "--checkpoint", str(checkpoint), "--port", str(port), "--backend", "torch"]
    # A pod gets 30 s (terminationGracePeriodSeconds) from SIGTERM to SIGKILL.
    settings: dict[str, Any] = {"shutdown_timeout_s": GRACE_S - 5}
    if not high_throughput:
        settings["high_throughput"] = False
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"serve": settings}))
    args += ["--config", str(config)]
    proc = _start(args)
    stop_load = threading.Event()
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become healthy"
            time.sleep(2)
        r = post(f"http://127.0.0.1:{port}/predict", {"reviews": ["great game"]})
        assert r.status_code == 200
        started = psutil.Process(proc.pid).children(recursive=True)
        assert any("raylet" in p.name() or "gcs_server" in p.name() for p in started)
        names = _names(started)
        # Which ingress answered: HAProxy (a child of the proxy actor) or the proxy actor.
        assert ("bin/haproxy" in names) == high_throughput, names
        load = [threading.Thread(target=_load, args=(port, stop_load)) for _ in range(4)]
        for t in load:  # the signal arrives under load, as a rollout's SIGTERM does
            t.start()
        time.sleep(3)
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)  # reads as it waits: a full pipe never blocks
        stop_s = time.monotonic() - t0
    finally:
        stop_load.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "serve stopped" in out
    assert stop_s < GRACE_S, f"{stop_s:.0f} s from the signal to exit\n{out[-3000:]}"
    _assert_all_gone(started)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_serve_process_stops_on_signal_during_startup(checkpoint: Path, tmp_path: Path) -> None:
    """A model replica that can never be placed keeps Serve's deploy waiting: SIGTERM must
    still stop the process and everything it started (it used to wait out its 600 s)."""
    config = tmp_path / "unplaceable.yaml"
    # This node has 2-4 CPUs. Two deployments, so the ingress (0.1 CPU) starts and the model
    # waits (the CPU default, one deployment, would have no replica up at all).
    config.write_text(yaml.safe_dump({"serve": {"num_cpus": 64, "single_deployment": False}}))
    port = free_port()
    args = ["serve", "--checkpoint", str(checkpoint), "--port", str(port), "--config", str(config)]
    proc = _start(args)
    try:
        deadline = time.monotonic() + 300
        # The ingress replica is up (it needs 0.1 CPU), the model's is pending: inside deploy.
        while "ServeReplica" not in _names(psutil.Process(proc.pid).children(recursive=True)):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "Serve did not start deploying"
            time.sleep(1)
        time.sleep(3)
        started = psutil.Process(proc.pid).children(recursive=True)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "before the app was ready" in out and "serve stopped" in out, out[-3000:]
    assert stop_s < 90, f"took {stop_s:.0f}s to stop"
    _assert_all_gone(started)
