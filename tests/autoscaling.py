"""A local autoscaling Ray cluster shaped like ``cluster/raycluster.yaml``.

The real autoscaler (``ray start --head --autoscaling-config``) with Ray's fake multi-node
provider: each "node" it launches is a real raylet on this machine (``ray start`` as a
subprocess of the autoscaler). What ``ray.cluster_utils.AutoscalingCluster`` would do, but
started here because, on Ray 2.60 (see the GKE issue):

* the wheel lacks the ``fake_multi_node/example.yaml`` that ``AutoscalingCluster`` loads, so
  the whole autoscaler config is written here (provider ``type: fake_multinode``);
* ``AutoscalingCluster.start()``/``shutdown()`` run ``ray stop --force``, which kills every
  Ray on the machine (the test session's shared cluster too); this head is stopped by its
  process tree instead;
* a head on a port other than 6379 needs ``gcs_address`` in the provider config, or the fake
  nodes never join;
* the fake provider leaves its nodes "uninitialized", so a node that died was never replaced:
  the provider is ``tests/fake_provider.py``'s subclass, which reports them up to date as
  KubeRay's does (the head's ``PYTHONPATH`` holds ``tests/`` for the autoscaler to import it).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import ray_procs as rp
import yaml

#: The worker group of cluster/raycluster.yaml, cut to this machine: 2-CPU nodes, 0 to 2.
WORKER_TYPE = "cpu-workers"


def autoscaler_config(
    gcs_address: str, worker_cpus: int, max_workers: int, idle_timeout_s: float
) -> dict[str, Any]:
    """A complete fake-multinode autoscaler config: a 0-CPU head and one CPU worker type."""
    return {
        "cluster_name": "steam-ray-local",
        "max_workers": max_workers,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "upscaling_speed": 1.0,
        "provider": {
            "type": "external",
            "module": "fake_provider.UpToDateFakeProvider",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_launch_config_check": True,
            "disable_node_updaters": True,
        },
        "auth": {"ssh_user": "ray"},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                "resources": {"CPU": worker_cpus},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_workers,
            },
        },
        **{
            key: []
            for key in (
                "cluster_synced_files",
                "rsync_exclude",
                "rsync_filter",
                "initialization_commands",
                "setup_commands",
                "head_setup_commands",
                "worker_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
            )
        },
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


@dataclass
class LocalAutoscalingCluster:
    """A running head (token auth on) whose autoscaler launches fake worker nodes."""

    head: rp.RayNode
    dashboard: str
    gcs_address: str
    token: str
    env: dict[str, str]
    temp_dir: Path
    max_workers: int

    def nodes(self) -> list[dict[str, Any]]:
        status, body = rp.http_get(f"{self.dashboard}/api/v0/nodes?limit=100", self.token)
        assert status == 200, body
        rows: list[dict[str, Any]] = body["data"]["result"]["result"]
        return rows

    def alive_workers(self) -> list[dict[str, Any]]:
        """Alive nodes other than the head."""
        return [n for n in self.workers_ever() if n["state"] == "ALIVE"]

    def workers_ever(self) -> list[dict[str, Any]]:
        """Every worker node that has joined, alive or gone (the state API keeps dead ones)."""
        return [n for n in self.nodes() if not n.get("is_head_node")]

    def wait_workers(self, count: int, timeout: float = 300) -> list[dict[str, Any]]:
        """Until exactly ``count`` workers are alive (scale-up or scale-down)."""
        deadline = time.monotonic() + timeout
        alive = self.alive_workers()
        while len(alive) != count and time.monotonic() < deadline:
            time.sleep(2)
            alive = self.alive_workers()
        assert len(alive) == count, f"{len(alive)} workers alive after {timeout}s, not {count}"
        return alive

    def worker_raylet_pids(self) -> list[int]:
        """PIDs of the fake worker nodes' raylets (children of this head's autoscaler)."""
        pids = []
        for proc in psutil.Process(self.head.proc.pid).children(recursive=True):
            try:
                if "raylet" in proc.name() and "--head" not in " ".join(proc.cmdline()):
                    pids.append(proc.pid)
            except psutil.NoSuchProcess:
                continue
        return pids

    def submit(
        self, entrypoint: Sequence[str], runtime_env: Path, sid: str, timeout: float = 900
    ) -> Any:
        return rp.submit(self.dashboard, entrypoint, self.env, runtime_env, sid, timeout=timeout)

    def stop(self) -> None:
        # The head's tree holds the autoscaler and every fake node it launched.
        self.head.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start(
    log_dir: Path,
    *,
    worker_cpus: int = 2,
    max_workers: int = 2,
    idle_timeout_s: float = 15,
    extra_env: dict[str, str] | None = None,
) -> LocalAutoscalingCluster:
    """Start the head (0 CPUs, token auth) with the real autoscaler on free ports."""
    token = rp.new_token()
    env = rp.base_env(token)
    env.update(extra_env or {})
    # The fake provider refuses to run without RAY_FAKE_CLUSTER; 1 s autoscaler ticks. A node
    # silent for 30 s (Ray's default) is replaced: shorter risked busy nodes on 2 cores.
    env.update(
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        PYTHONPATH=str(Path(__file__).parent),
    )
    temp = Path(tempfile.mkdtemp(prefix="sra", dir="/tmp"))  # short: Ray's unix sockets
    port, dash = rp.free_port(), rp.free_port()
    gcs = f"127.0.0.1:{port}"
    config = log_dir / "autoscaler.yaml"
    log_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(
        yaml.safe_dump(autoscaler_config(gcs, worker_cpus, max_workers, idle_timeout_s))
    )
    args = [
        "--head",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--autoscaling-config={config}",
        *rp.node_args("127.0.0.1", temp, 0, unique_ports=True, head_port=port),
    ]
    head = rp.start_node(args, env, log_dir / "head.log")
    cluster = LocalAutoscalingCluster(
        head, f"http://127.0.0.1:{dash}", gcs, token, env, temp, max_workers
    )
    try:
        rp.wait_for_nodes(cluster.dashboard, token, 1, [head])
    except BaseException:
        cluster.stop()
        raise
    return cluster
