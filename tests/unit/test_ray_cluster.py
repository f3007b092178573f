"""steam_ray.cluster: connecting (a dead cluster is one clear line, fast), the working-dir
guard of long driver calls, and OSError messages that name their path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray_procs as rp

from steam_ray import cluster
from steam_ray.cluster import describe_os_error, steady_cwd
from steam_ray.errors import ConfigError


def _cli(
    args: list[str], env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steam_ray.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_dead_recorded_cluster_is_one_clear_line(tmp_path: Path) -> None:
    """A head killed with its record left behind (TMPDIR/ray/ray_current_cluster): `data
    prepare` says so in one line at once (ray.init waited minutes, then a traceback)."""
    dead = f"127.0.0.1:{rp.free_port()}"
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(dead)
    env = {**rp.base_env(None), "TMPDIR": str(tmp_path)}
    start = time.monotonic()
    proc = _cli(["data", "prepare", "--source", "sample", "--output", str(tmp_path / "o")], env)
    line = _one_line_error(proc)
    assert f"cannot reach the Ray cluster at {dead}" in line
    assert str(tmp_path / "ray" / "ray_current_cluster") in line
    assert "ray stop" in line and "RAY_ADDRESS=local" in line
    assert time.monotonic() - start < 120
    assert not (tmp_path / "o").exists()


def test_dead_named_cluster_is_one_clear_line(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{rp.free_port()}"
    env = {**rp.base_env(None), "RAY_ADDRESS": dead, "TMPDIR": str(tmp_path)}
    proc = _cli(["data", "prepare", "--source", "sample", "--output", str(tmp_path / "o")], env)
    line = _one_line_error(proc)
    assert f"cannot reach the Ray cluster at {dead} (RAY_ADDRESS)" in line


def test_steady_cwd_survives_the_working_dir_being_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a node's runtime-env agent does to a job's working dir: rmtree, then unpack again
    at the same path. Inside the guard relative paths still resolve; after it the caller is
    back in the (new) directory of the same path."""
    work = tmp_path / "working_dir"
    work.mkdir()
    monkeypatch.chdir(work)
    with steady_cwd():
        shutil.rmtree(work)
        work.mkdir()
        assert os.path.isabs(os.path.abspath("x"))  # os.getcwd() works
    assert os.getcwd() == str(work)
    # Without the guard the same replacement leaves the process in a deleted directory.
    shutil.rmtree(work)
    work.mkdir()
    with pytest.raises(FileNotFoundError):
        os.getcwd()
    os.chdir(work)


def test_os_errors_name_their_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.csv"
    try:
        missing.read_text()
    except OSError as exc:
        assert str(missing) in describe_os_error(exc)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    monkeypatch.setenv("PWD", str(gone))
    gone.rmdir()
    try:
        os.getcwd()
    except OSError as exc:
        message = describe_os_error(exc)
    assert f"the working directory {gone} was removed" in message
    os.chdir(tmp_path)
    bare = OSError(5, "Input/output error")
    assert "no path given" in describe_os_error(bare)


def _cpus(value: object) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize(
    "manifest", ["raycluster.yaml", "rayjob-prepare.yaml", "rayjob-train.yaml", "rayjob-tune.yaml"]
)
def test_manifests_declare_what_their_worker_groups_can_grow_to(manifest: str) -> None:
    """STEAM_RAY_MAX_CPUS/GPUS on the pods equal the worker groups' maxReplicas x each pod's
    CPU/GPU limits: a job sizes its pools and sweeps by them before any worker exists."""
    import yaml

    spec = yaml.safe_load((rp.REPO / "cluster" / manifest).read_text())["spec"]
    spec = spec.get("rayClusterSpec", spec)
    cpus = gpus = 0.0
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus += group["maxReplicas"] * _cpus(limits.get("cpu", 0))
        gpus += group["maxReplicas"] * float(limits.get("nvidia.com/gpu", 0))
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in head["env"]}
    assert float(env[cluster.MAX_CPUS_ENV]) == cpus
    assert float(env[cluster.MAX_GPUS_ENV]) == gpus


def test_declared_maxima_make_an_autoscaling_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster.MAX_CPUS_ENV, "32")
    monkeypatch.setenv(cluster.MAX_GPUS_ENV, "4")
    assert cluster.declared_maxima() == {"CPU": 32.0, "GPU": 4.0}
    monkeypatch.setenv(cluster.MAX_GPUS_ENV, "four")
    with pytest.raises(ConfigError, match="STEAM_RAY_MAX_GPUS='four'"):
        cluster.declared_maxima()
    monkeypatch.delenv(cluster.MAX_CPUS_ENV)
    monkeypatch.delenv(cluster.MAX_GPUS_ENV)
    assert cluster.declared_maxima() is None


def test_a_job_driver_leaves_its_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After leave_working_dir a replaced working dir no longer matters, and an argument that
    named a file in it still does."""
    work = tmp_path / "working_dir"
    work.mkdir()
    (work / "my.yaml").write_text("train: {}\n")
    monkeypatch.chdir(work)
    argv = cluster.leave_working_dir(["--config", "my.yaml", "--data", "gs://b/d", "best"])
    assert argv == ["--config", str(work / "my.yaml"), "--data", "gs://b/d", "best"]
    shutil.rmtree(work)
    assert os.path.abspath("best") != ""  # os.getcwd() still works
