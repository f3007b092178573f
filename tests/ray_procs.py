"""Ray nodes started as real processes (``ray start --block``) for ``ray job submit`` tests.

Each node runs in its own process group with its own temp dir and ports, so it never touches
the session's shared cluster or another engineer's; teardown kills exactly the processes started
here (the process tree, then the group), never ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
RUNTIME_ENV = REPO / "cluster" / "runtime_env.yaml"
#: Enough for the sample's Ray Data blocks; small because other clusters share the machine.
OBJECT_STORE_BYTES = 200 * 1024**2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def new_token() -> str:
    return secrets.token_hex(32)


def base_env(token: str | None) -> dict[str, str]:
    """The environment of a node or client: this venv first, no inherited Ray address/auth.

    ``PYTHONPATH`` is dropped so the job's code comes from the uploaded working dir, as on a
    real cluster.
    """
    drop = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE="offline",
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
    )
    if token is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


@dataclass
class RayNode:
    """One ``ray start --block`` process group; ``stop()`` kills what it started."""

    proc: subprocess.Popen[bytes]
    log: Path
    cmd: list[str]
    env: dict[str, str]
    restarts: int = 0

    def restart_if_slow_start(self, max_restarts: int = 3) -> bool:
        """Ray gives a raylet (and the head's client server) 30 s to register, hard-coded; on
        an overloaded host that can pass. Start again (same ports and temp dir) instead."""
        log = self.log.read_text(errors="replace")
        slow = "timed out during startup" in log or "Timed out waiting for node info" in log
        if not slow or self.restarts >= max_restarts:
            return False
        self.stop()
        self.restarts += 1
        self.proc = _popen(self.cmd, self.env, self.log)
        return True

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 20.0) -> None:
        try:
            tree = [self.proc.pid, *(c.pid for c in psutil.Process(self.proc.pid).children(True))]
        except psutil.NoSuchProcess:
            tree = [self.proc.pid]
        kill_pids(tree, timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=timeout)


def kill_pids(pids: Sequence[int], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL whatever is left after ``timeout`` seconds."""
    procs = []
    for pid in dict.fromkeys(pids):
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


def start_node(
    args: Sequence[str], env: dict[str, str], log: Path, prefix: Sequence[str] = ()
) -> RayNode:
    """``[prefix...] ray start --block ARGS`` in a new session (its own process group)."""
    cmd = [*prefix, RAY, "start", "--block", "--disable-usage-stats", *args]
    return RayNode(_popen(cmd, env, log), log, cmd, env)


def _popen(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def node_args(
    ip: str, temp_dir: Path, num_cpus: int, *, unique_ports: bool, head_port: int | None = None
) -> list[str]:
    """Common ``ray start`` flags. ``unique_ports``: every listening port picked free (needed in
    the shared network namespace; a private namespace has all ports to itself)."""
    args = [
        f"--node-ip-address={ip}",
        f"--num-cpus={num_cpus}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--temp-dir={temp_dir}",
    ]
    if unique_ports:
        for flag in (
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
        ):
            args.append(f"{flag}={free_port()}")
        if head_port is not None:
            args.append(f"--ray-client-server-port={free_port()}")
    return args


def runtime_env_file(tmp: Path, extra_env: dict[str, str] | None = None) -> Path:
    """The checked-in runtime env (cluster/runtime_env.yaml) plus test-only env vars."""
    runtime_env: dict[str, Any] = yaml.safe_load(RUNTIME_ENV.read_text())
    runtime_env.setdefault("env_vars", {}).update(extra_env or {})
    path = tmp / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(runtime_env))
    return path


def submit(
    address: str,
    entrypoint: Sequence[str],
    env: dict[str, str],
    runtime_env: Path,
    submission_id: str,
    prefix: Sequence[str] = (),
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` (waits for the end, streaming the job's logs) from the repo root."""
    cmd = [
        *prefix,
        RAY,
        "job",
        "submit",
        f"--address={address}",
        f"--submission-id={submission_id}",
        f"--working-dir={REPO}",
        f"--runtime-env={runtime_env}",
        "--",
        *entrypoint,
    ]
    return subprocess.run(
        cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def http_get(
    url: str, token: str | None, prefix: Sequence[str] = (), timeout: float = 30
) -> tuple[int, Any]:
    """GET a dashboard URL from ``prefix`` (e.g. ``ip netns exec NS``): (status, JSON or text)."""
    script = (
        "import json, sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1])\n"
        "if len(sys.argv) > 2: req.add_header('Authorization', 'Bearer ' + sys.argv[2])\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=10)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode(errors='replace'))\n"
    )
    cmd = [*prefix, sys.executable, "-c", script, url, *([token] if token else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        return 0, proc.stderr
    status, _, body = proc.stdout.partition("\n")
    try:
        return int(status), json.loads(body)
    except json.JSONDecodeError:
        return int(status), body


def wait_for_nodes(
    dashboard: str,
    token: str,
    count: int,
    nodes: Sequence[RayNode],
    prefix: Sequence[str] = (),
    timeout: float = 420,
) -> list[dict[str, Any]]:
    """Poll the state API until ``count`` nodes are alive; fail fast if a node process died."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for node in nodes:
            if node.proc.poll() is not None and not node.restart_if_slow_start():
                raise RuntimeError(f"ray start exited ({node.proc.returncode}):\n{node.tail()}")
        status, last = http_get(f"{dashboard}/api/v0/nodes?limit=100", token, prefix)
        if status == 200:
            rows = last["data"]["result"]["result"]
            alive = [r for r in rows if r.get("state") == "ALIVE"]
            if len(alive) >= count:
                return alive
        time.sleep(2)
    tails = "\n---\n".join(n.tail() for n in nodes)
    raise TimeoutError(f"{count} nodes not alive after {timeout}s: {last}\n{tails}")


def train_worker_nodes(dashboard: str, token: str, prefix: Sequence[str] = ()) -> list[str]:
    """Node ids of every Ray Train worker actor the cluster has run (the state API keeps dead
    actors)."""
    status, body = http_get(f"{dashboard}/api/v0/actors?limit=1000&detail=1", token, prefix)
    assert status == 200, body
    rows = body["data"]["result"]["result"]
    return [r["node_id"] for r in rows if r.get("class_name") == "RayTrainWorker"]
