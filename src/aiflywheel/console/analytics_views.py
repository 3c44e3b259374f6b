"""The console's Drift, Insights and Planner pages, over the analytics functions
(``monitoring.drift.drift_report``, ``insights.topics.mine_insights``,
``planning.capacity.plan_capacity``), and the drift state and cost per 1k requests that
the Features page shows for each feature."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiflywheel.errors import DataError, FlywheelError
from aiflywheel.store import Store

log = logging.getLogger("aiflywheel.console")

# The load the Features page prices each champion at (the Planner page takes any).
OVERVIEW_QPS = 10.0
OVERVIEW_P95_MS = 500.0


def _settings():
    from aiflywheel.settings import get_settings

    return get_settings()


def feature_extras(store: Store, features: list[str]) -> dict[str, dict[str, Any]]:
    """Per feature: ``drift`` (True alarm / False calm / None unknown) and ``cost_per_1k``
    of the champion (None when the planner has no figures for it)."""
    from aiflywheel.monitoring.drift import drift_report
    from aiflywheel.planning.capacity import plan_capacity

    settings = _settings()
    out: dict[str, dict[str, Any]] = {}
    for name in features:
        extra: dict[str, Any] = {"drift": None, "cost_per_1k": None, "why": []}
        champion = store.champion(name)
        try:
            extra["drift"] = drift_report(name, store=store, settings=settings).alarm
        except FlywheelError as exc:
            extra["why"].append(str(exc))
        if champion is not None:
            try:
                plan = plan_capacity(
                    name,
                    store=store,
                    settings=settings,
                    qps=OVERVIEW_QPS,
                    p95_ms=OVERVIEW_P95_MS,
                    versions=[champion.version],
                )
                costs = [r.cost_per_1k_requests for r in plan.rows if r.version == champion.version]
                extra["cost_per_1k"] = min(costs) if costs else None
            except FlywheelError as exc:
                extra["why"].append(str(exc))
        out[name] = extra
    return out


def drift_chart(history: list[dict[str, Any]], title: str, threshold: float | None) -> str:
    """The worst check's value per computed report, over time, as an inline SVG."""
    from aiflywheel.reports.charts import line_chart_svg

    points = [h for h in history if isinstance(h.get("worst_value"), (int, float))]
    xs = list(range(1, len(points) + 1))
    series = {"worst": [float(h["worst_value"]) for h in points]}
    if threshold is not None and points:
        series["threshold"] = [threshold] * len(points)
    return line_chart_svg(
        xs,
        series,
        title=title,
        x_label="report #",
        y_label="statistic",
        dashed=("threshold",),
    )


def parse_positive(form: Any, field: str, default: float | None = None) -> float:
    """A positive number from a form field; else ``DataError`` naming the field."""
    text = str(form.get(field) or "").strip()
    if not text and default is not None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{field} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"{field} must be a positive number, got {text!r}")
    return value


def add_routes(router: APIRouter, console: Any, page: Callable, act: Callable) -> None:
    def chosen(request: Request) -> tuple[list[str], str]:
        from aiflywheel.console.views import feature_names, require_feature

        names = feature_names(console.store)
        name = request.query_params.get("feature") or (names[0] if names else "")
        if name:
            require_feature(console.store, name)
        return names, name

    @router.get("/drift")
    @page("view")
    def drift(request: Request, user: Any) -> Response:
        from aiflywheel.monitoring.drift import drift_report

        names, name = chosen(request)
        report, chart = None, ""
        if name:
            report = drift_report(name, store=console.store, settings=_settings()).model_dump(
                mode="json"
            )
            worst = max(report["checks"], key=lambda c: c.get("value") or 0, default=None)
            chart = drift_chart(
                report["history"], f"{name}: drift", worst["threshold"] if worst else None
            )
        return console.render(
            request, "drift.html.j2", user, features=names, feature=name, r=report, chart=chart
        )

    @router.get("/insights")
    @page("view")
    def insights(request: Request, user: Any) -> Response:
        from aiflywheel.insights.topics import mine_insights

        names, name = chosen(request)
        report = None
        if name:
            report = mine_insights(name, store=console.store, settings=_settings()).model_dump(
                mode="json"
            )
        return console.render(
            request, "insights.html.j2", user, features=names, feature=name, r=report
        )

    @router.get("/planner")
    @page("view")
    def planner(request: Request, user: Any) -> Response:
        from aiflywheel.planning.capacity import plan_capacity

        names, name = chosen(request)
        q = request.query_params
        error, plan = "", None
        asked = "qps" in q or "p95_ms" in q
        qps = q.get("qps", str(OVERVIEW_QPS))
        p95 = q.get("p95_ms", str(OVERVIEW_P95_MS))
        if name:
            try:
                plan = plan_capacity(
                    name,
                    store=console.store,
                    settings=_settings(),
                    qps=parse_positive(q, "qps", OVERVIEW_QPS if not asked else None),
                    p95_ms=parse_positive(q, "p95_ms", OVERVIEW_P95_MS if not asked else None),
                ).model_dump(mode="json")
            except FlywheelError as exc:
                error = " ".join(str(exc).split())
        return console.render(
            request,
            "planner.html.j2",
            user,
            status=422 if error else 200,
            features=names,
            feature=name,
            plan=plan,
            error=error,
            qps=qps,
            p95_ms=p95,
        )
