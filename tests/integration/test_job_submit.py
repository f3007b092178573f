"""``ray job submit`` of jobs/*.py against real Ray heads with token auth, as users run them.

* a local head (one node, the root network namespace, free ports);
* two hosts: a head and a worker node in two network namespaces joined by a veth pair, each on
  its own IP, and the client in a third namespace reaching only the head's dashboard;
* the shared-storage guard of the job entrypoints on the session's 2-node cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray_procs as rp
from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.data.manifest import read_manifest
from steam_ray.errors import ConfigError
from steam_ray.storage import SHARED_FS_ENV, require_shared_storage

pytestmark = pytest.mark.integration

PREPARE = [
    *("python", "jobs/prepare_data.py", "--source", "sample", "--limit", "1500"),
    *("--max-length", "48", "--no-keep-rejected"),
]
TRAIN = [
    *("python", "jobs/train.py", "--num-workers", "2", "--max-steps", "3", "--batch-size", "8"),
    *("--cpus-per-worker", "0.5", "--experiment-name", "job"),
]


def _short_tmp() -> Path:
    # Ray's unix sockets live under --temp-dir: pytest's tmp_path is too long for them.
    return Path(tempfile.mkdtemp(prefix="srj", dir="/tmp"))


def _assert_succeeded(proc: subprocess.CompletedProcess[str], sid: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert f"Job '{sid}' succeeded" in out, out[-6000:]


def _assert_outputs(data: Path, out: Path) -> dict[str, Any]:
    manifest = read_manifest(str(data))
    assert manifest.rows_read == 1500
    assert manifest.splits["train"].rows > 0
    record: dict[str, Any] = json.loads((out / "result.json").read_text())
    best = Path(record["best_checkpoint"])
    assert (best / "config.json").is_file() and (best / "model.safetensors").is_file()
    assert record["world_size"] == 2
    return record


# --- the guard, on the session's real 2-node cluster -------------------------------------------


def test_shared_storage_guard_on_two_node_cluster(
    ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SHARED_FS_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"train --output .* local path .* has 2 nodes"):
        require_shared_storage(str(tmp_path / "runs"), "train --output")
    require_shared_storage("gs://bucket/runs", "train --output")
    require_shared_storage(str(tmp_path / "runs"), "train --output", shared_fs=True)
    monkeypatch.setenv(SHARED_FS_ENV, f"/nonexistent-mount{os.pathsep}{tmp_path}")
    require_shared_storage(str(tmp_path / "runs"), "train --output")
    monkeypatch.setenv(SHARED_FS_ENV, "/nonexistent-mount")
    with pytest.raises(ConfigError):
        require_shared_storage(str(tmp_path / "runs"), "train --output")


def test_job_entrypoint_refuses_local_output_on_two_nodes(
    ray_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs/ path (``--job``) checks; the plain CLI (used on one machine) does not."""
    monkeypatch.delenv(SHARED_FS_ENV, raising=False)
    args = ["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "runs")]
    refused = CliRunner().invoke(app, ["--job", *args])
    assert refused.exit_code == 1
    assert "train --data" in refused.output and "has 2 nodes" in refused.output
    assert not (tmp_path / "runs").exists()
    # Declared shared: the guard passes and training's own input check speaks next.
    shared = CliRunner().invoke(app, ["--job", *args, "--shared-fs"])
    assert shared.exit_code == 1 and "data dir not found" in shared.output
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 1 and "data dir not found" in plain.output


# --- a local head with token auth ---------------------------------------------------------------


# Full tier: the GKE chain (test_gke_local.py, in `make test`) submits the same jobs with a
# token to an autoscaling head; this one-node, local-disk variant adds 94 s for little more.
@pytest.mark.full
def test_job_submit_local_head_with_token(tmp_path: Path) -> None:
    token = rp.new_token()
    env = rp.base_env(token)
    temp = _short_tmp()
    port, dash = rp.free_port(), rp.free_port()
    args = [
        "--head",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        *rp.node_args("127.0.0.1", temp, 4, unique_ports=True, head_port=port),
    ]
    head = rp.start_node(args, env, tmp_path / "head.log")
    address = f"http://127.0.0.1:{dash}"
    try:
        rp.wait_for_nodes(address, token, 1, [head])
        runtime_env = rp.runtime_env_file(tmp_path)
        data, out = tmp_path / "data", tmp_path / "train"
        sid = f"prepare-{uuid.uuid4().hex[:8]}"
        proc = rp.submit(address, [*PREPARE, "--output", str(data)], env, runtime_env, sid)
        _assert_succeeded(proc, sid)
        sid = f"train-{uuid.uuid4().hex[:8]}"
        train = [*TRAIN, "--data", str(data), "--output", str(out)]
        proc = rp.submit(address, train, env, runtime_env, sid)
        _assert_succeeded(proc, sid)
        _assert_outputs(data, out)
    finally:
        head.stop()
        shutil.rmtree(temp, ignore_errors=True)


# --- two hosts: network namespaces --------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns)"
    if shutil.which("ip") is None:
        return "the iproute2 'ip' command is not installed"
    probe = f"srprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add is not permitted here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Hosts:
    """Namespaces head / worker joined by a veth pair (10.123.N.1 - .2); the client namespace
    reaches the head over a second veth pair (10.124.N.2 -> .1) and nothing else."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.head, self.worker, self.client = (f"sr{tag}{r}" for r in ("head", "wrk", "cli"))
        n = int(tag[:2], 16)
        self.head_ip, self.worker_ip = f"10.123.{n}.1", f"10.123.{n}.2"
        self.head_front_ip, self.client_ip = f"10.124.{n}.1", f"10.124.{n}.2"
        self.head_dev, self.worker_dev = f"sr{tag}h", f"sr{tag}w"
        self.created: list[str] = []
        self.tag = tag

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def up(self) -> None:
        for ns in (self.head, self.worker, self.client):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        t = self.tag
        _ip("link", "add", self.head_dev, "netns", self.head, "type", "veth",
            "peer", "name", self.worker_dev, "netns", self.worker)  # fmt: skip
        _ip("link", "add", f"sr{t}f", "netns", self.head, "type", "veth",
            "peer", "name", f"sr{t}c", "netns", self.client)  # fmt: skip
        for ns, dev, addr in (
            (self.head, self.head_dev, f"{self.head_ip}/24"),
            (self.worker, self.worker_dev, f"{self.worker_ip}/24"),
            (self.head, f"sr{t}f", f"{self.head_front_ip}/24"),
            (self.client, f"sr{t}c", f"{self.client_ip}/24"),
        ):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def pids(self) -> list[int]:
        pids: list[int] = []
        for ns in self.created:
            proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids += [int(p) for p in proc.stdout.split()]
        return pids

    def down(self) -> None:
        # Every process inside these namespaces was started by this test.
        rp.kill_pids(self.pids())
        for ns in self.created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(f"two-host test skipped: {reason}")
    h = Hosts()
    try:
        h.up()
        yield h
    finally:
        h.down()


@pytest.mark.full
def test_job_submit_across_two_hosts(hosts: Hosts, tmp_path: Path) -> None:
    token = rp.new_token()
    env = rp.base_env(token)
    # Both namespaces share this machine's hostname, which resolves to loopback: name the
    # interface Gloo (torch.distributed on CPU) binds, as a real host's own hostname would.
    head_env = {**env, "GLOO_SOCKET_IFNAME": hosts.head_dev}
    worker_env = {**env, "GLOO_SOCKET_IFNAME": hosts.worker_dev}
    head_tmp, worker_tmp = _short_tmp(), _short_tmp()
    # Private namespaces: the default ports are free there.
    port, dash = 6379, 8265
    head = rp.start_node(
        [
            "--head",
            f"--port={port}",
            "--dashboard-host=0.0.0.0",
            f"--dashboard-port={dash}",
            *rp.node_args(hosts.head_ip, head_tmp, 2, unique_ports=False),
        ],
        head_env,
        tmp_path / "head.log",
        prefix=hosts.exec_prefix(hosts.head),
    )
    nodes = [head]
    client = hosts.exec_prefix(hosts.client)
    address = f"http://{hosts.head_front_ip}:{dash}"
    try:
        rp.wait_for_nodes(address, token, 1, nodes, prefix=client)
        worker = rp.start_node(
            [
                f"--address={hosts.head_ip}:{port}",
                *rp.node_args(hosts.worker_ip, worker_tmp, 2, unique_ports=False),
            ],
            worker_env,
            tmp_path / "worker.log",
            prefix=hosts.exec_prefix(hosts.worker),
        )
        nodes.append(worker)
        alive = rp.wait_for_nodes(address, token, 2, nodes, prefix=client)
        assert {n["node_ip"] for n in alive} == {hosts.head_ip, hosts.worker_ip}
        node_ids = {n["node_id"] for n in alive}

        # Without the token (or with a wrong one) the head refuses the submission.
        for bad in (rp.base_env(None), rp.base_env(rp.new_token())):
            sid = f"refused-{uuid.uuid4().hex[:8]}"
            proc = rp.submit(address, PREPARE, bad, runtime_env=rp.runtime_env_file(tmp_path),
                             submission_id=sid, prefix=client, timeout=120)  # fmt: skip
            assert proc.returncode != 0
            assert "ray.exceptions.AuthenticationError" in proc.stderr, proc.stderr[-3000:]
            status, _ = rp.http_get(f"{address}/api/jobs/{sid}", token, client)
            assert status == 404, f"job {sid} exists although its submission was refused"
        status, _ = rp.http_get(f"{address}/api/v0/nodes", None, client)
        assert status == 401

        # The two nodes see one filesystem (same machine), so it is declared shared; without
        # the declaration the job entrypoint refuses the local path.
        runtime_env = rp.runtime_env_file(tmp_path)
        data, out = tmp_path / "data", tmp_path / "train"
        sid = f"local-{uuid.uuid4().hex[:8]}"
        proc = rp.submit(address, [*PREPARE, "--output", str(data)], env, runtime_env, sid,
                         prefix=client)  # fmt: skip
        assert proc.returncode != 0
        assert "has 2 nodes" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-4000:]
        assert not data.exists()

        sid = f"prepare-{uuid.uuid4().hex[:8]}"
        prepare = [*PREPARE, "--output", str(data), "--shared-fs"]
        _assert_succeeded(rp.submit(address, prepare, env, runtime_env, sid, client), sid)
        sid = f"train-{uuid.uuid4().hex[:8]}"
        train = [*TRAIN, "--data", str(data), "--output", str(out), "--shared-fs"]
        train += ["--placement-strategy", "STRICT_SPREAD"]
        _assert_succeeded(rp.submit(address, train, env, runtime_env, sid, client), sid)
        _assert_outputs(data, out)
        workers = rp.train_worker_nodes(address, token, client)
        assert len(workers) == 2 and set(workers) == node_ids, (workers, node_ids)
    finally:
        for node in nodes:
            node.stop()
        for d in (head_tmp, worker_tmp):
            shutil.rmtree(d, ignore_errors=True)
