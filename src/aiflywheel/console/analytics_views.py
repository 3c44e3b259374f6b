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
EMBEDDERS = ("auto", "tfidf", "e5-small")  # how insights embed texts (auto: e5 if it loads)


def _settings():
    from aiflywheel.settings import get_settings

    return get_settings()


def feature_extras(store: Store, features: list[str]) -> dict[str, dict[str, Any]]:
    """Per feature: ``drift`` (the newest stored drift report's alarm: True, False, or None
    when none was computed yet) and ``cost_per_1k`` of the champion (None when the planner
    has no serving figures for it)."""
    from aiflywheel.monitoring.records import latest_reports

    settings = _settings()
    latest = latest_reports(store)
    out: dict[str, dict[str, Any]] = {}
    for name in features:
        report = latest.get(name)
        extra: dict[str, Any] = {
            "drift": report.alarm if report is not None else None,
            "drift_at": report.computed_at if report is not None else None,
            "cost_per_1k": None,
            "why": [],
        }
        champion = store.champion(name)
        if champion is not None:
            try:
                extra["cost_per_1k"] = _champion_cost(store, settings, name, champion.version)
            except FlywheelError as exc:
                extra["why"].append(" ".join(str(exc).split()))
        out[name] = extra
    return out


def _champion_cost(store: Store, settings: Any, feature: str, version: int) -> float | None:
    from aiflywheel.planning.capacity import plan_capacity

    plan = plan_capacity(
        feature,
        store=store,
        settings=settings,
        qps=OVERVIEW_QPS,
        p95_ms=OVERVIEW_P95_MS,
        versions=[version],
    )
    costs = [r.cost_per_1k_requests for r in plan.rows if r.version == version]
    return min(costs) if costs else None


def drift_chart(history: list[dict[str, Any]], title: str) -> str:
    """The worst check's statistic per stored report, over time, as an inline SVG."""
    from aiflywheel.reports.charts import line_chart_svg

    points = [h for h in history if isinstance(h.get("worst_value"), (int, float))]
    return line_chart_svg(
        list(range(1, len(points) + 1)),
        {"worst check": [float(h["worst_value"]) for h in points]},
        title=title,
        x_label="stored report",
        y_label="statistic",
    )


def fresh_drift(store: Store, feature: str) -> dict[str, Any]:
    """Compute and store a drift report now (it joins the history)."""
    from aiflywheel.monitoring.drift import drift_report

    return drift_report(feature, store=store, settings=_settings(), save=True).model_dump(
        mode="json"
    )


def stored_drift(store: Store, feature: str) -> dict[str, Any] | None:
    """The newest stored drift report with the history (the keys of ``DriftReport``), or
    None when none was computed yet: reading the page computes nothing (the server
    refreshes stale reports in the background; "record now" computes one)."""
    from aiflywheel.monitoring.records import report_history

    rows = report_history(store, feature)
    if not rows:
        return None
    newest = rows[-1]
    return {
        "feature": feature,
        "version": newest.version,
        "window_rows": newest.window_rows,
        "reference_rows": newest.reference_rows,
        "computed_at": newest.computed_at.isoformat(timespec="seconds"),
        "alarm": newest.alarm,
        "checks": list(newest.checks or []),
        "history": [
            {
                "computed_at": row.computed_at.isoformat(timespec="seconds"),
                "alarm": row.alarm,
                "worst_check": row.worst_check,
                "worst_value": row.worst_value,
            }
            for row in rows
        ],
    }


def parse_positive(form: Any, field: str, default: float) -> float:
    """A positive number from a form field (``default`` when absent); else ``DataError``
    naming the field."""
    if field not in form:
        return default
    text = str(form.get(field) or "").strip()
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

    def drift_page(request: Request, user: Any, *, compute: bool) -> Response:
        names, name = chosen(request)
        report, chart = None, ""
        if name:
            report = (
                fresh_drift(console.store, name) if compute else stored_drift(console.store, name)
            )
        if report is not None:
            chart = drift_chart(report["history"], f"{name}: drift")
        return console.render(
            request, "drift.html.j2", user, features=names, feature=name, r=report, chart=chart
        )

    @router.get("/drift")
    @page("view")
    def drift(request: Request, user: Any) -> Response:
        return drift_page(request, user, compute=False)

    @router.post("/drift")
    async def drift_record(request: Request) -> Response:
        return await act(
            request, "view", lambda form, user: drift_page(request, user, compute=True)
        )

    @router.get("/insights")
    @page("view")
    def insights(request: Request, user: Any) -> Response:
        from aiflywheel.insights.topics import mine_insights

        names, name = chosen(request)
        embedder = request.query_params.get("embedder", "auto")
        if embedder not in EMBEDDERS:
            raise DataError(f"embedder must be one of {', '.join(EMBEDDERS)}, got {embedder!r}")
        report = None
        if name:
            report = mine_insights(
                name, store=console.store, settings=_settings(), embedder=embedder
            ).model_dump(mode="json")
        return console.render(
            request,
            "insights.html.j2",
            user,
            features=names,
            feature=name,
            r=report,
            embedder=embedder,
            embedders=EMBEDDERS,
        )

    @router.post("/insights/send")
    async def insights_send(request: Request) -> Response:
        def work(form: Any, user: Any) -> Response:
            from aiflywheel.console.app import local_path, redirect
            from aiflywheel.console.views import int_field
            from aiflywheel.insights.topics import send_gap_draft

            name = str(form.get("feature") or "")
            sent = send_gap_draft(
                name,
                int_field(form.get("ticket_id"), "ticket_id"),
                str(form.get("answer") or ""),
                store=console.store,
                actor=user.actor,
            )
            target = local_path(f"/console/review?feature={name}")
            return redirect(f"{target}#fb-{sent.get('feedback_id', '')}", "sent")

        return await act(request, "review", work)

    @router.get("/planner")
    @page("view")
    def planner(request: Request, user: Any) -> Response:
        from aiflywheel.planning.capacity import PRICE_KEYS, plan_capacity, price_table

        names, name = chosen(request)
        q = request.query_params
        settings = _settings()
        prices = price_table(settings)
        shown = {
            "qps": q.get("qps", str(OVERVIEW_QPS)),
            "p95_ms": q.get("p95_ms", str(OVERVIEW_P95_MS)),
            **{key: q.get(key, f"{prices[key]:g}") for key in PRICE_KEYS},
        }
        error, plan = "", None
        if name:
            try:
                # Form fields override the price table for this page only (never stored).
                edited = {key: parse_positive(q, key, prices[key]) for key in PRICE_KEYS}
                plan = plan_capacity(
                    name,
                    store=console.store,
                    settings=settings.model_copy(update={**edited, "prices_file": None}),
                    qps=parse_positive(q, "qps", OVERVIEW_QPS),
                    p95_ms=parse_positive(q, "p95_ms", OVERVIEW_P95_MS),
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
            shown=shown,
            price_keys=PRICE_KEYS,
        )
