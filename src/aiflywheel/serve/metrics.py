"""Prometheus metrics of one app, in a registry of its own (tests build many apps)."""

from __future__ import annotations

import logging
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
log = logging.getLogger("aiflywheel.serve")


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

    def watch_drift(self, store, *, refresh: bool = True) -> DriftCollector:
        """Export the newest stored drift report of every feature on each scrape; with
        ``refresh``, a scrape that finds a served feature's report older than its recipe's
        ``monitor.drift.refresh_minutes`` computes a new one in the background."""
        previous = getattr(self, "drift", None)
        if previous is not None:  # the app started again (a new lifespan)
            self.registry.unregister(previous)
        self.drift = DriftCollector(store, refresh=refresh)
        self.registry.register(self.drift)
        return self.drift

    def render(self) -> bytes:
        return generate_latest(self.registry)


class DriftCollector:
    """Drift gauges read from the stored reports (``aiflywheel.monitoring``) at scrape time:

    - ``flywheel_drift_alarm{feature}``: 1 when the newest report raised the alarm;
    - ``flywheel_drift_worst{feature,check}``: the value of the check furthest above its
      threshold (``check`` is ``name/statistic``);
    - ``flywheel_drift_check{feature,check,statistic}``: every check's value;
    - ``flywheel_drift_report_age_seconds{feature}``: how old the newest report is.
    """

    def __init__(self, store, *, refresh: bool = True) -> None:
        import threading

        self.store = store
        self.refresh = refresh
        self._busy = threading.Lock()
        self.refreshing: threading.Thread | None = None

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from aiflywheel.errors import FlywheelError
        from aiflywheel.store import utcnow

        alarm = GaugeMetricFamily(
            "flywheel_drift_alarm", "1 when the newest drift report alarms.", labels=["feature"]
        )
        worst = GaugeMetricFamily(
            "flywheel_drift_worst",
            "Value of the drift check furthest above its threshold.",
            labels=["feature", "check"],
        )
        checks = GaugeMetricFamily(
            "flywheel_drift_check",
            "Value of each drift check of the newest report.",
            labels=["feature", "check", "statistic"],
        )
        age = GaugeMetricFamily(
            "flywheel_drift_report_age_seconds",
            "Seconds since the newest drift report.",
            labels=["feature"],
        )
        try:
            from aiflywheel.monitoring.records import latest_reports

            reports = latest_reports(self.store)
        except FlywheelError:
            reports = {}
        now = utcnow()
        for feature, row in sorted(reports.items()):
            alarm.add_metric([feature], 1.0 if row.alarm else 0.0)
            if row.worst_check is not None and row.worst_value is not None:
                worst.add_metric([feature, row.worst_check], float(row.worst_value))
            for check in row.checks:
                checks.add_metric(
                    [feature, check["name"], check["statistic"]], float(check["value"])
                )
            computed = row.computed_at
            if computed.tzinfo is None:
                computed = computed.replace(tzinfo=now.tzinfo)
            age.add_metric([feature], max(0.0, (now - computed).total_seconds()))
        if self.refresh:
            self._maybe_refresh(reports, now)
        yield from (alarm, worst, checks, age)

    def _maybe_refresh(self, reports, now) -> None:
        """Start one background refresh of the stale served features (none while one runs)."""
        import threading

        if not self._busy.acquire(blocking=False):
            return
        try:
            stale = self._stale(reports, now)
        except Exception:  # a scrape never fails over a refresh
            log.exception("drift refresh: finding stale features failed")
            stale = []
        if not stale:
            self._busy.release()
            return

        def run() -> None:
            try:
                from aiflywheel.monitoring.drift import drift_report
                from aiflywheel.settings import get_settings

                for feature in stale:
                    try:
                        drift_report(feature, store=self.store, settings=get_settings())
                    except Exception:
                        log.exception("drift refresh of %s failed", feature)
            finally:
                self._busy.release()

        self.refreshing = threading.Thread(target=run, name="drift-refresh", daemon=True)
        self.refreshing.start()

    def _stale(self, reports, now) -> list[str]:
        """Served features with enough new traffic whose newest report is too old."""
        from sqlalchemy import func, select

        from aiflywheel.monitoring.drift import feature_recipe
        from aiflywheel.store import PredictionLog

        out = []
        for feature, version in sorted(self.store.champion_versions().items()):
            config = feature_recipe(self.store, feature)[0].monitor.drift
            last = reports.get(feature)
            if last is not None:
                computed = last.computed_at
                if computed.tzinfo is None:
                    computed = computed.replace(tzinfo=now.tzinfo)
                if (now - computed).total_seconds() < config.refresh_minutes * 60:
                    continue
            with self.store.session() as session:
                feature_id = self.store._feature_id(session, feature)
                rows = session.scalar(
                    select(func.count())
                    .select_from(PredictionLog)
                    .where(PredictionLog.feature_id == feature_id, PredictionLog.version == version)
                )
            if rows >= config.min_rows:
                out.append(feature)
        return out


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
