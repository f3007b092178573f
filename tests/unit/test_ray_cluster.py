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

from steam_ray.cluster import describe_os_error, steady_cwd


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
