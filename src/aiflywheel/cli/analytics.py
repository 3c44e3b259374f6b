"""`flywheel drift`, `flywheel insights`, `flywheel plan`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aiflywheel.cli.app import console
from aiflywheel.tables import print_table


def _json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


def drift_command(
    feature: Annotated[str, typer.Argument(help="The feature whose live traffic is checked.")],
    window: Annotated[
        int | None,
        typer.Option("--window", min=1, help="Newest predictions compared (default: recipe's)."),
    ] = None,
    fail_on_alarm: Annotated[
        bool, typer.Option("--fail-on-alarm", help="Exit 1 when a check alarms (for cron/CI).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare recent predictions with the champion's training data (PSI / KS / AUC).

    Exits 0 with the alarm shown; --fail-on-alarm exits 1 when it is raised.
    """
    from aiflywheel.monitoring.drift import drift_report
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    report = drift_report(feature, store=open_store(), settings=get_settings(), window=window)
    if as_json:
        _json(report.model_dump(mode="json"))
    else:
        table = Table("check", "statistic", "value", "threshold", "alarm", "detail")
        for check in report.checks:
            table.add_row(
                check.name,
                check.statistic,
                f"{check.value:.4f}",
                f"{check.threshold:g}",
                "[bold red]ALARM[/bold red]" if check.alarm else "ok",
                escape(check.detail),
            )
        print_table(console, table)
        verdict = "[bold red]DRIFT ALARM[/bold red]" if report.alarm else "[green]no drift[/green]"
        console.print(
            f"{feature} v{report.version}: {verdict} — {report.window_rows} recent predictions "
            f"vs {report.reference_rows} training texts ({len(report.history)} reports stored)",
            highlight=False,
        )
        if report.window_rows == 0:
            console.print("no predictions of the champion yet: nothing to compare")
    if fail_on_alarm and report.alarm:
        raise typer.Exit(1)


def insights_command(
    feature: Annotated[str, typer.Argument(help="The feature to mine.")],
    max_topics: Annotated[int, typer.Option("--max-topics", min=1, help="Topics at most.")] = 12,
    embedder: Annotated[
        str, typer.Option("--embedder", help="auto (e5-small when it loads), e5-small or tfidf.")
    ] = "auto",
    send: Annotated[
        int | None,
        typer.Option("--send", help="A gap's ticket id: send --answer to the review queue."),
    ] = None,
    answer: Annotated[
        str | None, typer.Option("--answer", help="The edited FAQ answer (with --send).")
    ] = None,
    actor: Annotated[str, typer.Option("--actor", help="Who wrote the answer.")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Cluster feedback comments, corrected inputs and handoff questions into topics, and
    list the questions the knowledge does not cover, with draft answers.

    With --send TICKET --answer TEXT: send an edited draft to the review queue instead
    (accepted, the next retrain learns it).
    """
    from aiflywheel.errors import DataError
    from aiflywheel.insights.topics import mine_insights, send_gap_draft
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    if send is not None or answer is not None:
        if send is None or answer is None:
            raise DataError("--send TICKET and --answer TEXT go together; give both")
        done = send_gap_draft(feature, send, answer, store=open_store(), actor=actor)
        console.print(
            f"ticket {done['ticket_id']} answered: feedback {done['feedback_id']} is "
            f"{done['review_state']} in the review queue (flywheel feedback review)"
        )
        return
    if embedder not in ("auto", "e5-small", "tfidf"):
        raise DataError(f"--embedder must be one of auto, e5-small, tfidf; got {embedder!r}")
    report = mine_insights(
        feature,
        store=open_store(),
        settings=get_settings(),
        max_topics=max_topics,
        embedder=embedder,  # type: ignore[arg-type]
    )
    if as_json:
        _json(report.model_dump(mode="json"))
        return
    counts = ", ".join(f"{n} {k}" for k, n in report.texts.items()) or "no texts"
    console.print(f"{feature}: {counts}; embeddings: {escape(report.embedding)}", highlight=False)
    table = Table("#", "source", "title", "size", "languages", "days", "examples")
    for topic in report.topics:
        table.add_row(
            str(topic.topic_id),
            topic.source,
            escape(topic.title),
            str(topic.size),
            ", ".join(f"{k} {v}" for k, v in sorted(topic.languages.items())),
            " ".join(f"{d.day[5:]}:{d.count}" for d in topic.trend[-7:]),
            escape(" | ".join(e[:60] for e in topic.examples)),
        )
    print_table(console, table)
    if report.gaps:
        gaps = Table(
            "volume", "question the knowledge does not cover", "draft from", "open tickets"
        )
        for gap in report.gaps:
            gaps.add_row(
                str(gap.volume),
                escape(gap.question),
                gap.draft_from,
                " ".join(map(str, gap.open_ticket_ids[:8])) or "none (all answered)",
            )
        print_table(console, gaps)
        console.print(
            f"send an edited draft: flywheel insights {feature} --send TICKET --answer TEXT"
        )


def _money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if value < 1 else f"{value:,.2f}"


def _source_label(source: str) -> str:
    """The source in one word for the table (the full text is printed under it)."""
    for prefix, label in (
        ("flywheel plan --measure", "measured"),
        ("flywheel compress", "compress"),
        ("assumed", "assumed"),
        ("not measured", "none"),
    ):
        if source.startswith(prefix):
            return label
    return source[:20]


def plan_command(
    feature: Annotated[str, typer.Argument(help="The feature to plan for.")],
    qps: Annotated[float, typer.Option("--qps", help="Target requests per second.")] = 50.0,
    p95_ms: Annotated[float, typer.Option("--p95-ms", help="Target p95 latency (ms).")] = 200.0,
    version: Annotated[
        list[int] | None, typer.Option("--version", help="Only these versions (repeatable).")
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure", help="Time the chosen versions (one CPU core) first and keep the figures."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Cost per 1,000 requests, cores for a load, monthly and retrain cost, per version."""
    from aiflywheel.errors import DataError
    from aiflywheel.planning.capacity import measure_version, plan_capacity
    from aiflywheel.settings import get_settings
    from aiflywheel.store import open_store

    store, settings = open_store(), get_settings()
    plan = plan_capacity(
        feature, store=store, settings=settings, qps=qps, p95_ms=p95_ms, versions=version
    )
    if measure:
        for row in plan.rows:
            if row.version is None:
                continue
            try:
                measure_version(feature, row.version, store=store)
                console.print(f"measured v{row.version}")
            except DataError as exc:
                console.print(f"v{row.version} not measured: {escape(str(exc))}")
        plan = plan_capacity(
            feature, store=store, settings=settings, qps=qps, p95_ms=p95_ms, versions=version
        )
    if as_json:
        _json(plan.model_dump(mode="json"))
        return
    table = Table(
        "version",
        "variant",
        "req/s/core",
        "p95 ms",
        "size MB",
        "mem MB",
        "per 1k req",
        "cores",
        "GPUs",
        "monthly",
        "retrain",
        "meets p95",
        "source",
    )
    for row in plan.rows:
        table.add_row(
            f"v{row.version}" if row.version is not None else "–",
            row.variant,
            f"{row.req_per_s_per_core:,.1f}" if row.req_per_s_per_core else "–",
            f"{row.p95_ms:.2f}" if row.p95_ms is not None else "–",
            f"{row.size_mb:.1f}" if row.size_mb is not None else "–",
            f"{row.memory_mb:.0f}" if row.memory_mb is not None else "–",
            _money(row.cost_per_1k_requests),
            str(row.cores_needed) if row.cores_needed is not None else "–",
            str(row.gpus_needed) if row.gpus_needed is not None else "–",
            _money(row.monthly_cost),
            _money(row.retrain_cost),
            {True: "yes", False: "NO", None: "–"}[row.meets_p95],
            _source_label(row.source),
        )
    print_table(console, table)
    for row in plan.rows:
        name = f"v{row.version}" if row.version is not None else row.variant
        console.print(f"[dim]{name}: {escape(row.source)}[/dim]", highlight=False)
    p = plan.prices
    console.print(
        f"{feature} at {plan.qps:g} req/s within p95 {plan.p95_ms:g} ms; prices: core-hour "
        f"{p.cpu_core_hour:g}, GPU-hour {p.gpu_hour:g}, LLM {p.llm_per_1k_tokens:g}/1k tokens; "
        f"assumed: 1 GPU = {plan.assumptions['gpu_speedup_cores_per_gpu']:g} cores, "
        f"{plan.assumptions['hours_per_month']:g} h/month",
        highlight=False,
    )
