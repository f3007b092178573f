"""cluster/monitoring/: Prometheus config, alert rules and their unit tests, Grafana dashboard.

promtool (Debian's `prometheus` package; .ci/run installs it) checks the config and rules and
runs alerts_test.yml. The other checks keep the files honest about what the code exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "cluster" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; .ci/run does)"
)
#: Metrics the alerts/dashboard name ahead of the code that records them (none today).
PENDING: set[str] = set()


def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, *args], cwd=MON, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MON / "alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


@needs_promtool
def test_promtool_accepts_config_and_rules() -> None:
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in _promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml")


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [
        c
        for t in yaml.safe_load((MON / "alerts_test.yml").read_text())["tests"]
        for c in t["alert_rule_test"]
    ]
    for alert in _alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']}: no quiet case"


def _recorded_metrics() -> set[str]:
    source = (REPO / "steam_ray" / "serve" / "metrics.py").read_text()
    return set(re.findall(r'(?:Counter|Gauge|Histogram)\(\s*"([a-z_]+)"', source))


def _named_metrics() -> set[str]:
    text = (MON / "alerts.yml").read_text() + (MON / "grafana-dashboard.json").read_text()
    names = set(re.findall(r"ray_(steam_ray_[a-z_]+)", text))
    return {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names}


def test_alerts_and_dashboard_name_metrics_the_app_records() -> None:
    recorded = _recorded_metrics()
    assert {"steam_ray_http_requests", "steam_ray_predicted_positive_rate"} <= recorded
    assert _named_metrics() - recorded == PENDING
    assert not PENDING & recorded, "recorded now: drop it from PENDING"


def test_replica_alert_matches_the_rayservice_min_replicas() -> None:
    docs = yaml.safe_load((REPO / "cluster" / "rayservice.yaml").read_text())
    serve = yaml.safe_load(docs["spec"]["serveConfigV2"])
    model = next(
        d for a in serve["applications"] for d in a["deployments"] if d["name"] == "SentimentModel"
    )
    minimum = model["autoscaling_config"]["min_replicas"]
    rule = next(a for a in _alerts() if a["alert"] == "SteamRayReplicasBelowMin")
    assert f"< {minimum}\n" in rule["expr"] and f"min_replicas ({minimum})" in str(rule)


def test_dashboard_is_grafana_json_with_prometheus_targets() -> None:
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["panels"]
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        assert all("ray_" in t["expr"] or "steam_ray:" in t["expr"] for t in panel["targets"])


def test_podmonitoring_selects_kuberay_pods_on_the_metrics_port() -> None:
    pm = yaml.safe_load((MON / "podmonitoring.yaml").read_text())
    assert pm["kind"] == "PodMonitoring"
    assert pm["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    assert pm["spec"]["endpoints"][0]["port"] == "metrics"
