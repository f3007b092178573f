"""`steam-ray tune report` on a sweep's result.json/history.json: PNGs drawn, HTML loads them
in a real headless browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.tune_report import PLOTS


def write_sweep(out: Path) -> None:
    """A sweep's output as steam_ray.tune writes it: 3 trials, one stopped early."""
    trials, history = [], {}
    for i, (lr, f1s, stopped) in enumerate(
        [(3e-4, [0.6, 0.75, 0.81], False), (1e-9, [0.41], True), (1e-4, [0.55, 0.7], True)]
    ):
        tid = f"t{i}"
        curve = [
            {"step": 2 * (k + 1), "macro_f1": f, "loss": 1 - f, "checkpoint_path": f"/x/{tid}/{k}"}
            for k, f in enumerate(f1s)
        ]
        history[tid] = curve
        best = max(curve, key=lambda p: p["macro_f1"])
        trials.append(
            {
                "trial_id": tid,
                "config": {"lr": lr, "class_weighted": i % 2 == 0},
                "metrics": curve[-1],
                "best_metrics": {k: v for k, v in best.items() if k != "checkpoint_path"},
                "status": "TERMINATED",
                "iterations": len(curve),
                "stopped_early": stopped,
                "checkpoint": best["checkpoint_path"],
            }
        )
    result: dict[str, Any] = {
        "metric": "macro_f1",
        "mode": "max",
        "trials": trials,
        "best_checkpoint": trials[0]["checkpoint"],
        "best_config": trials[0]["config"],
        "best_metrics": trials[0]["best_metrics"],
        "best_trial_id": "t0",
        "output": str(out),
    }
    out.mkdir(parents=True)
    (out / "result.json").write_text(json.dumps(result))
    (out / "history.json").write_text(json.dumps(history))


def test_report_renders_in_a_headless_browser(tmp_path: Path, chromium: Any) -> None:
    out = tmp_path / "sweep"
    write_sweep(out)
    res = CliRunner().invoke(app, ["tune", "report", str(out)])
    assert res.exit_code == 0, res.output
    report = out / "report.html"
    assert res.output.strip() == str(report)
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    driver = chromium
    driver.get(report.as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map("
        "i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    rows = driver.execute_script("return document.querySelectorAll('tr').length;")
    text = driver.find_element("tag name", "body").text
    assert sorted(src for src, *_ in images) == sorted(PLOTS)
    for src, complete, width, height in images:
        assert complete and width > 0 and height > 0, src
    assert rows == 1 + 3  # header + one row per trial
    assert "t0 (best)" in text


def test_report_of_a_missing_sweep_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["tune", "report", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert "result.json not found" in res.output
