"""Prometheus metrics through ``ray.serve.metrics`` (Ray exports them on each node's metrics
port with the prefix ``ray_``, tagged with the deployment and replica).

Created lazily, once per replica process: metric objects must live where they are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from ray.serve.metrics import Counter, Gauge, Histogram

LATENCY_MS_BOUNDARIES = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]
BATCH_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
TOKEN_BOUNDARIES = [8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]


@dataclass(frozen=True)
class IngressMetrics:
    requests: Counter
    errors: Counter
    latency: Histogram


@dataclass(frozen=True)
class ModelMetrics:
    batch_size: Histogram
    input_tokens: Histogram
    predictions: Counter
    positive_rate: Gauge
    log_rows: Counter
    log_dropped: Counter


@cache
def ingress_metrics() -> IngressMetrics:
    keys: Any = ("route", "method", "status_code")  # Ray annotates tag_keys as tuple[str]
    return IngressMetrics(
        requests=Counter(
            "steam_ray_http_requests", "HTTP requests by route and status code.", tag_keys=keys
        ),
        errors=Counter(
            "steam_ray_http_errors", "HTTP responses with status >= 400.", tag_keys=keys
        ),
        latency=Histogram(
            "steam_ray_http_latency_ms",
            "Ingress latency per request (ms).",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("route",),
        ),
    )


@cache
def model_metrics() -> ModelMetrics:
    return ModelMetrics(
        batch_size=Histogram(
            "steam_ray_batch_size", "Reviews per model batch.", boundaries=BATCH_BOUNDARIES
        ),
        input_tokens=Histogram(
            "steam_ray_input_tokens",
            "Tokens per review after truncation (drift monitoring).",
            boundaries=TOKEN_BOUNDARIES,
        ),
        predictions=Counter("steam_ray_predictions", "Predictions by label.", tag_keys=("label",)),
        positive_rate=Gauge(
            "steam_ray_predicted_positive_rate",
            "Share of positive predictions over the last 1000 (drift monitoring).",
        ),
        log_rows=Counter("steam_ray_prediction_log_rows", "Prediction log rows written."),
        log_dropped=Counter(
            "steam_ray_prediction_log_dropped",
            "Prediction log rows dropped (buffer full or a failed write); requests unaffected.",
        ),
    )
