"""CLI commands of the assistant: ``flywheel eval``, ``flywheel ask``, ``flywheel kb ...``,
``flywheel tickets``. ``flywheel train`` builds an assistant from a recipe of task
``assistant`` (see ``aiflywheel.tasks.assistant.build``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from aiflywheel.errors import ModelError, NotFoundError
from aiflywheel.tables import print_table

console = Console()
kb_app = typer.Typer(help="The knowledge base of an assistant.", no_args_is_help=True)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def print_build(result) -> None:
    """The figures a PM reads after ``flywheel train`` on an assistant recipe."""
    from aiflywheel.tasks.assistant.report_html import assistant_verdict

    metrics = result.metrics
    console.print(f"\n[bold]{escape(assistant_verdict(metrics))}[/bold]", highlight=False)
    evaluation = metrics.get("evaluation")
    if evaluation:
        print_evaluation(evaluation)
    console.print(
        f"{metrics['feature']} v{result.version} registered ({result.status}, "
        f"{metrics['method']}); report: [bold]{result.report_html}[/bold]"
    )


def print_evaluation(evaluation: dict) -> None:
    table = Table("retriever", "hit@1", "hit@5", "MRR", "held-out hit@5", title="retrieval")
    held = evaluation.get("retrieval_held_out") or {}
    for mode, r in evaluation["retrieval"].items():
        table.add_row(
            mode,
            _pct(r["hit@1"]),
            _pct(r["hit@5"]),
            f"{r['mrr']:.3f}",
            _pct((held.get(mode) or {}).get("hit@5")),
        )
    print_table(console, table)
    table = Table(
        "questions",
        "answer accuracy",
        "handoff precision",
        "handoff recall",
        "unsupported",
        "p50 ms",
        "p95 ms",
        title="answers",
    )
    for name, key in (("all", "answers"), ("held out", "answers_held_out")):
        a = evaluation.get(key)
        if a:
            table.add_row(
                f"{name} ({a['questions']})",
                _pct(a["answer_accuracy"]),
                _pct(a["handoff_precision"]),
                _pct(a["handoff_recall"]),
                str(a["unsupported_answers"]),
                f"{a['latency_ms']['p50']:.0f}",
                f"{a['latency_ms']['p95']:.0f}",
            )
    print_table(console, table)
    reasons = (evaluation.get("answers") or {}).get("handoff_reasons") or {}
    if reasons:
        counted = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        console.print(f"handoffs: {escape(counted)}", highlight=False)


def _assistant_store(feature: str):
    """The store, once ``feature`` is known to be an assistant (one-line errors else)."""
    from aiflywheel.store import open_store

    store = open_store()
    found = store.get_feature(feature)
    if found is None:
        raise NotFoundError(
            f"unknown feature {feature!r}; `flywheel train` on an assistant recipe creates one"
        )
    if found.task != "assistant":
        raise ModelError(
            f"{feature!r} is a {found.task} feature, not an assistant; "
            "`flywheel models show` has a classifier's evaluation"
        )
    return store


def _loaded(ref: str):
    from aiflywheel.core.versions import parse_version_ref
    from aiflywheel.tasks.assistant.service import load_assistant

    feature, number = parse_version_ref(ref)
    store = _assistant_store(feature)
    row = store.get_model_version(feature, number)
    return store, load_assistant(row.model_path, feature=feature, version=row.version, store=store)


def eval_command(
    ref: Annotated[str, typer.Argument(help="Assistant FEATURE or FEATURE:VERSION.")],
    eval_set: Annotated[
        Path | None,
        typer.Option("--eval-set", help="JSONL questions (default: the recipe's eval_set)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Folder for metrics.json and report.html.")
    ] = None,
) -> None:
    """Evaluate an assistant: retrieval hit@1/hit@5/MRR (BM25, dense, hybrid), answer
    accuracy, handoff precision/recall, latency; writes report.html."""
    from aiflywheel.files import write_json_atomic, write_text_atomic
    from aiflywheel.settings import get_settings
    from aiflywheel.store import new_run_id
    from aiflywheel.tasks.assistant.build import load_manifest, resolve_eval_set
    from aiflywheel.tasks.assistant.evaluation import evaluate_assistant, load_eval_set
    from aiflywheel.tasks.assistant.report_html import assistant_verdict, write_assistant_report

    store, loaded = _loaded(ref)
    config = loaded.config
    if eval_set is None:
        if config.eval_set is None:
            raise ModelError(f"{loaded.feature} has no assistant.eval_set; pass --eval-set")
        # the path resolved at build time (relative to the recipe), else from here
        built_with = load_manifest(loaded.model_dir).get("eval_set")
        path = Path(built_with) if built_with else resolve_eval_set(config.eval_set, Path.cwd())
    else:
        path = eval_set
    questions = load_eval_set(path)
    evaluation = evaluate_assistant(
        loaded.assistant, questions, held_out_share=config.held_out_share
    )
    rows = evaluation.pop("rows")
    target = output or get_settings().runs_dir / loaded.feature / f"eval-{new_run_id()}"
    metrics = {
        "feature": loaded.feature,
        "version": loaded.version,
        "method": f"{config.mode}+{config.generator.kind}",
        "encoder": config.encoder,
        "eval_set": str(path),
        "thresholds": loaded.assistant.thresholds.to_json(),
        "knowledge_base": {"chunks": len(loaded.assistant.index)},
        "evaluation": evaluation,
    }
    write_json_atomic(target / "metrics.json", metrics)
    write_text_atomic(
        target / "evaluation.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
    )
    write_assistant_report(metrics, target / "evaluation.jsonl", target / "report.html")
    console.print(f"[bold]{escape(assistant_verdict(metrics))}[/bold]", highlight=False)
    print_evaluation(evaluation)
    console.print(f"report: [bold]{target / 'report.html'}[/bold]")


NO_TICKET_TEXT = {
    "zh": "这个问题需要人工客服来处理。未创建工单：加上 --ticket 再问一次即可创建，"
    "或通过 API（POST /v1/chat/completions）提问。",
    "en": "This question needs a person from the support team. No ticket was opened: ask "
    "again with --ticket to open one, or ask through the API (POST /v1/chat/completions), "
    "which opens one.",
}


def _log_handoff(store, loaded, session_id: str, question: str, reply) -> int | None:
    """Record the turn and open its ticket, as the API does for a handoff (``log_turn``)."""
    import uuid

    from aiflywheel.tasks.assistant.records import TurnRecord, log_turn

    return log_turn(
        store,
        TurnRecord(
            prediction_id=uuid.uuid4().hex,
            feature=loaded.feature,
            version=loaded.version,
            session_id=session_id,
            question=question,
            answer=reply.text,
            kind=reply.kind,
            handoff=reply.handoff,
            reason=reply.reason,
            confidence=reply.confidence,
            latency_ms=1000 * reply.seconds,
            details={
                "citations": [c.to_json()["citation"] for c in reply.citations],
                "supported": reply.supported,
                "channel": "cli",
            },
        ),
    )


def ask_command(
    ref: Annotated[str, typer.Argument(help="Assistant FEATURE or FEATURE:VERSION.")],
    questions: Annotated[list[str], typer.Argument(help="One or more questions, in order.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per question.")
    ] = False,
    conversation: Annotated[
        bool,
        typer.Option(
            "--conversation",
            help="The questions are turns of one conversation (later ones see earlier "
            "ones); without it each question is asked on its own.",
        ),
    ] = False,
    ticket: Annotated[
        bool,
        typer.Option(
            "--ticket",
            help="Open a handoff ticket (as the API does) for each question handed off to "
            "a person; without it nothing is stored.",
        ),
    ] = False,
) -> None:
    """Ask an assistant from the terminal. Each question is its own conversation unless
    --conversation is given. Nothing is stored unless --ticket is given, which records a
    handed-off question and opens its ticket like POST /v1/chat/completions."""
    import uuid

    store, loaded = _loaded(ref)
    history: list[dict] = []
    session_id = "cli-" + uuid.uuid4().hex[:16]
    for question in questions:
        if not conversation:
            history, session_id = [], "cli-" + uuid.uuid4().hex[:16]
        reply = loaded.assistant.answer(question, history)
        ticket_id = None
        if reply.handoff and ticket:
            ticket_id = _log_handoff(store, loaded, session_id, question, reply)
        text = reply.text
        if reply.handoff and ticket_id is None:
            text = NO_TICKET_TEXT["zh" if reply.language == "zh" else "en"]
        history += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": text},
        ]
        if as_json:
            extension = reply.extension()
            record = {
                "question": question,
                "answer": text,
                "answer_type": reply.kind,
                "handoff": reply.handoff,
                "reason": reply.reason,
                "ticket_id": ticket_id,
                "citations": extension["citations"],
                "confidence": extension["confidence"],
                "language": reply.language,
            }
            if conversation:
                record["session_id"] = session_id
            # one object per line: ``flywheel ask --json ... | jq`` reads them one by one
            console.print(json.dumps(record, ensure_ascii=False), highlight=False, soft_wrap=True)
            continue
        console.print(f"[bold]> {escape(question)}[/bold]", highlight=False)
        console.print(escape(text), highlight=False)
        tag = f"{reply.kind}, confidence {reply.confidence:.3f}"
        if reply.reason:
            tag += f", {reply.reason}"
        if ticket_id is not None:
            tag += f", ticket {ticket_id} opened"
        console.print(f"[dim]({escape(tag)})[/dim]")
        for c in reply.citations:
            console.print(f"[dim]  [{c.n}] {escape(c.source)}#{escape(c.anchor)}[/dim]")


@kb_app.command("add")
def kb_add(
    feature: Annotated[str, typer.Argument(help="Assistant feature.")],
    question: Annotated[str | None, typer.Option("--question", help="The question.")] = None,
    answer: Annotated[str | None, typer.Option("--answer", help="The curated answer.")] = None,
    category: Annotated[str, typer.Option("--category")] = "",
    language: Annotated[str | None, typer.Option("--language", help="zh or en.")] = None,
    from_feedback: Annotated[
        int | None,
        typer.Option(
            "--from-feedback",
            help="Feedback id whose corrected_answer (and the question it answers) becomes "
            "the entry; the feedback is marked accepted.",
        ),
    ] = None,
    actor: Annotated[str, typer.Option("--actor", help="Who adds it (audit).")] = "cli",
) -> None:
    """Add a FAQ entry to an assistant now: its index is updated in place, a running
    `flywheel serve` picks it up within its reload interval (the API's POST
    /v1/features/NAME/kb takes effect at once), and every later version keeps it."""
    from aiflywheel.errors import DataError
    from aiflywheel.tasks.assistant.service import add_entry, entry_from_feedback, put_live_chunks

    if language not in (None, "zh", "en"):
        raise DataError(f"--language must be zh or en, got {language!r}")
    store, loaded = _loaded(feature)
    if from_feedback is not None:
        asked, corrected = entry_from_feedback(store, from_feedback, feature)
        question, answer = question or asked, answer or corrected
    if not (question or "").strip() or not (answer or "").strip():
        raise DataError("give --question and --answer, or --from-feedback ID")
    chunk = add_entry(
        store,
        feature,
        question=question or "",
        answer=answer or "",
        category=category,
        language=language,
        actor=actor,
        feedback_id=from_feedback,
        index=None,
    )
    put_live_chunks(loaded.assistant.index, [chunk])
    console.print(
        f"added {escape(chunk.citation)} ({chunk.language}) to {feature} "
        f"v{loaded.version}'s index; {len(loaded.assistant.index)} chunks"
    )


@kb_app.command("list")
def kb_list(feature: Annotated[str, typer.Argument(help="Assistant feature.")]) -> None:
    """Entries added live (flywheel kb add, the API), newest last."""
    from aiflywheel.tasks.assistant.records import kb_entries

    table = Table("id", "entry", "language", "question", "answer", "by", "feedback", "added")
    for row in kb_entries(_assistant_store(feature), feature):
        table.add_row(
            str(row.id),
            row.entry_id,
            row.language,
            row.question,
            row.answer,
            row.actor,
            str(row.feedback_id or ""),
            f"{row.created_at:%Y-%m-%d %H:%M}",
        )
    print_table(console, table)


class _TicketsGroup(TyperGroup):
    """``flywheel tickets FEATURE`` (round 1) still lists: an unknown first word is a feature."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().resolve_command(ctx, args)


tickets_app = typer.Typer(
    cls=_TicketsGroup,
    help="Handoff tickets: questions the assistant passed to a person, and their answers.",
    no_args_is_help=True,
)


@tickets_app.command("list")
def tickets_command(
    feature: Annotated[str, typer.Argument(help="Assistant feature.")],
    all_tickets: Annotated[bool, typer.Option("--all", help="Answered ones too.")] = False,
) -> None:
    """Handoff tickets: questions the assistant passed to a person (open ones by default)."""
    from aiflywheel.tasks.assistant.records import list_tickets

    table = Table("ticket", "status", "session", "question", "reason", "created")
    for t in list_tickets(_assistant_store(feature), feature, None if all_tickets else "open"):
        table.add_row(
            str(t.id),
            t.status,
            t.session_id,
            t.question,
            t.reason,
            f"{t.created_at:%Y-%m-%d %H:%M}",
        )
    print_table(console, table)


@tickets_app.command("answer")
def tickets_answer(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id (`flywheel tickets list`).")],
    answer: Annotated[
        str, typer.Option("--answer", help="What the customer should have been told.")
    ],
    actor: Annotated[str, typer.Option("--actor", help="Who answers (recorded).")] = "cli",
) -> None:
    """Answer a ticket: the answer waits in the feedback review queue (`flywheel feedback
    review`) and the ticket is closed; once accepted, `flywheel retrain` learns it."""
    from aiflywheel.store import open_store
    from aiflywheel.tasks.assistant.records import answer_ticket

    done = answer_ticket(open_store(), ticket_id, answer, actor=actor)
    verb = "stored" if done.outcome == "created" else "replaced the pending answer"
    console.print(
        f"ticket {done.ticket_id} of {done.feature} answered: {verb} as feedback "
        f"{done.feedback_id} ({done.review_state}); review it with `flywheel feedback review "
        f"{done.feature} --accept --ids {done.feedback_id}`",
        highlight=False,
    )


def demo_turn_command(
    feature: Annotated[str, typer.Argument(help="Assistant feature.")] = "help-center",
    questions: Annotated[
        str,
        typer.Option(
            "--questions",
            help="JSONL of uncovered topics (topic, language, answer, asked, check); default: "
            "the shipped help center's.",
        ),
    ] = "demo:help-center-uncovered",
) -> None:
    """One assistant turn over HTTP: customers ask what the help center does not cover,
    staff answer the tickets, review, retrain, gate, hot swap; before/after figures on
    held-out questions."""
    from aiflywheel.settings import get_settings
    from aiflywheel.tasks.assistant.demo_turn import turn_the_assistant

    store = _assistant_store(feature)
    result = turn_the_assistant(
        feature,
        store=store,
        settings=get_settings(),
        questions=questions,
        report=lambda line: console.print(f"[dim]·[/dim] {escape(line)}", highlight=False),
    )
    gate = result.gate
    table = Table(
        "",
        f"before (v{result.before.version})",
        f"after (v{result.after.version})",
        title="held-out questions on uncovered topics (never answered by staff)",
    )
    b, a = result.before, result.after
    table.add_row("answered with the team's answer", _pct(b.accuracy), _pct(a.accuracy))
    for language in sorted(set(b.by_language) | set(a.by_language)):
        rb, nb = b.by_language.get(language, (0, 0))
        ra, na = a.by_language.get(language, (0, 0))
        table.add_row(f"  {language}", f"{rb}/{nb}", f"{ra}/{na}")
    table.add_row("handed off", str(b.handoffs), str(a.handoffs))
    table.add_row("answered wrongly", str(b.wrong), str(a.wrong))
    print_table(console, table)
    champ, cand = f"v{result.champion_version}", f"v{result.candidate_version}"
    table = Table("the gate", f"{champ} (champion)", f"{cand} (candidate)")
    for key, name in (
        ("test", "answer accuracy, frozen evaluation set"),
        ("feedback", "answer accuracy, held-out feedback"),
        ("handoff_precision", "handoff precision"),
        ("handoff_recall", "handoff recall"),
    ):
        if gate.champion.get(key) is not None:
            table.add_row(name, _pct(gate.champion[key]), _pct(gate.candidate[key]))
    print_table(console, table)
    verb = "promoted" if result.decision == "promoted" else "kept out by the gate"
    console.print(
        f"\n[bold]{feature}: {result.asked} customer questions, {result.tickets} tickets and "
        f"{result.corrections} corrections answered by staff, {result.accepted} accepted; "
        f"{cand} {verb}; held-out questions answered {_pct(b.accuracy)} -> "
        f"{_pct(a.accuracy)}.[/bold]",
        highlight=False,
    )


__all__ = [
    "ask_command",
    "demo_turn_command",
    "eval_command",
    "kb_app",
    "print_build",
    "tickets_app",
    "tickets_command",
]
