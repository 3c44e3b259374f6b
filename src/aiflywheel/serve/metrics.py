"""Prometheus metrics of one app, in a registry of its own (tests build many apps)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Every metric the server exports."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "flywheel_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "flywheel_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "flywheel_predictions",
            "Texts classified, by feature and the version that answered.",
            ["feature", "version"],
            registry=r,
        )
        self.in_progress = Gauge(
            "flywheel_predictions_in_progress",
            "Classify requests waiting for their model.",
            ["feature"],
            registry=r,
        )
        self.batch_size = Histogram(
            "flywheel_batch_size",
            "Texts per model call.",
            ["feature"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "flywheel_batch_requests",
            "Requests sharing one model call.",
            ["feature"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.feedback = Counter(
            "flywheel_feedback",
            "Feedback stored, by feature and kind (corrected, thumb_up, thumb_down, comment).",
            ["feature", "kind"],
            registry=r,
        )
        self.serving_version = Gauge(
            "flywheel_serving_version",
            "Model version answering for each feature.",
            ["feature"],
            registry=r,
        )
        self.reloads = Counter(
            "flywheel_model_reloads",
            "Hot swaps to a new champion, by outcome.",
            ["feature", "outcome"],
            registry=r,
        )
        self.log_backlog = Gauge(
            "flywheel_prediction_log_backlog", "Predictions waiting to be stored.", registry=r
        )
        self.shadow_backlog = Gauge(
            "flywheel_shadow_log_backlog", "Shadow predictions waiting to be stored.", registry=r
        )
        self.log_rows = Counter(
            "flywheel_prediction_log_rows",
            "Rows handled by the prediction log writer "
            "(kind: predictions or shadow; outcome: written, failed attempt, dropped).",
            ["kind", "outcome"],
            registry=r,
        )
        self.shadow_scored = Counter(
            "flywheel_shadow_scored",
            "Texts scored by a shadow version.",
            ["feature", "version"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "flywheel_shadow_dropped",
            "Texts not shadow-scored because the queue was full.",
            ["feature"],
            registry=r,
        )

    def writer_hook(self, event: str, n: int) -> None:
        """Count a prediction-writer event such as ``predictions_written``."""
        kind, _, outcome = event.partition("_")
        self.log_rows.labels(kind, outcome).inc(n)

    def watch_backlog(self, predictions: Callable[[], float], shadow: Callable[[], float]) -> None:
        self.log_backlog.set_function(predictions)
        self.shadow_backlog.set_function(shadow)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts requests and times them, labelled by the matched route's path template."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = scope["path"] if "endpoint" in scope and status != 404 else "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
