"""The GPU run kit's CPU dry run: `benchmarks/gpu/run.sh --dry-run`, the whole chain (setup,
data prepare, train, tune, serve under load, summary) at toy sizes, as a subprocess.

The kit runs on a lent GPU machine only now and then, in minutes of device time: this is what
says, on every `make test`, that the one command still works end to end. Its stages start Ray
instances of their own (RAY_ADDRESS=local; serve with none): never the session's cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steam_ray.config import CPU_DEFAULT_BACKEND

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
from kit import FIGURE_KEYS, STAGES  # noqa: E402

#: Figures a CPU run cannot have: there is no GPU peak to divide by.
GPU_ONLY = {"peak_tflops", "train_mfu", "train_mfu_all_params"}


def test_dry_run_reports_every_figure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(WORK=str(tmp_path / "work"), OUT_DIR=str(tmp_path / "out"), PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", "benchmarks/gpu/run.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, output
    summary = json.loads((tmp_path / "out" / "gpu_kit_summary.json").read_text())
    assert summary["mode"] == "dry-run" and summary["ok"], output
    assert {s: summary["stages"][s]["ok"] for s in STAGES} == dict.fromkeys(STAGES, True)
    figures = summary["figures"]
    assert set(figures) == set(FIGURE_KEYS)
    missing = sorted(k for k, v in figures.items() if v is None and k not in GPU_ONLY)
    assert not missing, f"figures without a value: {missing}\n{output}"
    assert figures["device"] == "cpu" and figures["train_mfu"] is None
    assert figures["train_samples_per_s"] > 0 and figures["serve_req_s"] > 0
    assert figures["sweep_trials_ok"] == figures["sweep_trials"] == 2
    assert figures["serve_errors"] == 0
    # Read back from the running replicas' /v1/model: CPU, so the measured CPU default.
    assert figures["serve_device"] == "cpu" and figures["serve_backend"] == CPU_DEFAULT_BACKEND
    assert (tmp_path / "out" / "gpu_kit_logs.tar.gz").stat().st_size > 0
    # What the table prints, so a reader of the log sees the figures too.
    assert "MFU n/a" in proc.stdout and "req/s" in proc.stdout
