"""`steam-ray quickstart --serve` end to end as a real process, on its own local Ray, with tiny
settings: every stage runs (prepare, train, sweep, register, evaluate, predict, serve), the
served model answers over real HTTP, Ctrl-C shuts it down and leaves no Ray process behind.

It is also the CLI chain's test: `data prepare`'s output (fingerprints) is what `train` consumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from serve_fixtures import free_port, post

from steam_ray.data.manifest import read_manifest
from steam_ray.quickstart import EXAMPLES, STAGES
from steam_ray.registry import Registry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Tiny: 1,500 rows read, 2 optimizer steps of training, 1 sweep trial of 2 steps, few resamples
# (the sweep dominates its time; tests/integration/test_tune.py covers ASHA with several).
TINY = (
    "data.limit=1500",
    "train.num_workers=1",
    "train.cpus_per_worker=0.5",
    "train.max_steps=2",
    "train.token_budget=512",
    "train.max_eval_rows=64",
    "tune.num_samples=1",
    "tune.grace_period_steps=1",
    "tune.train.max_steps=2",
    "tune.train.eval_every_steps=1",
    "tune.train.max_eval_rows=64",
    "evaluate.bootstrap_resamples=10",
)


def _env() -> dict[str, str]:
    # Its own local Ray: not the session cluster (or any RAY_ADDRESS) of the test process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    return env


def _wait_healthy(proc: subprocess.Popen[str], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            try:
                out = proc.communicate(timeout=30)[0][-4000:]
            except subprocess.TimeoutExpired:  # a Ray process outside the group holds the pipe
                out = "(no output: the pipe stayed open)"
            raise AssertionError(f"quickstart did not start serving in {timeout_s:.0f}s:\n{out}")
        time.sleep(2)


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            continue
    return out


def test_quickstart_end_to_end_serves_then_stops_cleanly(tmp_path: Path) -> None:
    port, workdir = free_port(), tmp_path / "qs"
    args = ["quickstart", "--workdir", str(workdir), "--port", str(port), "--serve"]
    for item in TINY:
        args += ["--set", item]
    proc = subprocess.Popen(
        [sys.executable, "-m", "steam_ray.cli", *args],
        env=_env(),
        stdout=subprocess.PIPE,  # not a TTY: progress must be lines, not bar redraws
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, timeout_s=900)
        # The test's own request, while the quickstart keeps serving.
        r = post(f"{url}/predict", {"reviews": ["Loved every minute.", "Dull and too long."]})
        assert r.status_code == 200, r.text
        assert [p["label"] in ("positive", "negative") for p in r.json()["predictions"]] == [
            True,
            True,
        ]
        started = psutil.Process(proc.pid).children(recursive=True)
        assert any("raylet" in p.name() or "gcs_server" in p.name() for p in started)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]

    summary = json.loads((workdir / "summary.json").read_text())
    assert set(STAGES) <= set(summary["seconds"])
    ckpt = Path(summary["best_checkpoint"])
    assert (ckpt / "config.json").is_file() and (ckpt / "tokenizer.json").is_file()
    # What prepare wrote is what train consumed (lineage in the checkpoint and result.json).
    manifest = read_manifest(str(workdir / "data"))
    assert manifest.rows_read == 1500
    info = json.loads((ckpt / "steam_ray.json").read_text())
    assert info["data_fingerprint"] == manifest.fingerprint
    assert info["tokenizer_fingerprint"] == manifest.tokenizer_fingerprint
    record = json.loads((workdir / "train" / "result.json").read_text())
    assert record["data_fingerprint"] == manifest.fingerprint and record["global_step"] == 2
    registry = Registry(str(workdir / "registry"))
    assert registry.get("steam-sentiment", summary["registry_version"]).path == str(ckpt)
    for split in ("val", "test"):
        assert 0.0 <= summary["metrics"][split]["accuracy"] <= 1.0
    assert Path(summary["report"]).is_file() and summary["report"].endswith("report.html")
    assert summary["predictions"]["rows_scored"] > 0
    served = summary["served"]["examples"]
    assert len(served) == len(EXAMPLES)
    assert all(p["label"] in ("positive", "negative") and 0 <= p["score"] <= 1 for p in served)

    assert f"curl -s -X POST {url}/predict" in out and f"try-it page: {url}/" in out
    assert "serve app deleted" in out
    # Off a TTY Ray Data's progress is off (else a block of log lines every 10 s per dataset).
    assert "logging_progress" not in out
    deadline = time.monotonic() + 30
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(1)
    assert _alive(started) == [], "Ray processes left behind"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", timeout=5)
