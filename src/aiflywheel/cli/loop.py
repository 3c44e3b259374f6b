"""CLI commands of the loop: feedback review, retrain, promote, rollback, audit.

Registered on the ``flywheel`` app by ``aiflywheel.cli``; each command is a few lines
over ``aiflywheel.tasks.text_classification.retrain`` and the store.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiflywheel.errors import ConflictError, DataError, NotFoundError
from aiflywheel.files import write_text_atomic
from aiflywheel.store import REVIEW_STATES, FeedbackItem, Store
from aiflywheel.tables import print_table

feedback_app = typer.Typer(
    help="Review what users answered: list, export, import, accept or correct in bulk.",
    no_args_is_help=True,
)
console = Console()

EXPORT_COLUMNS = (
    "id",
    "prediction_id",
    "version",
    "text",
    "predicted",
    "corrected_label",
    "corrected_answer",
    "thumb",
    "comment",
    "review_state",
    "reviewer",
    "created_at",
)
ActorOption = Annotated[
    str | None,
    typer.Option("--actor", help="Who decides (for the audit log); default: the OS user."),
]


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _store() -> Store:
    from aiflywheel.store import open_store

    return open_store()


def _check_labels(store: Store, feature: str, labels: set[str], where: str) -> None:
    from aiflywheel.tasks.text_classification.retrain import feature_labels

    known = feature_labels(store, feature)
    unknown = sorted(labels - set(known))
    if known and unknown:
        raise DataError(
            f"{where}: label {unknown[0]!r} is not a label of {feature} "
            f"(labels: {', '.join(known)})"
        )


@feedback_app.command("list")
def feedback_list(
    feature: Annotated[str, typer.Argument(help="Feature name.")],
    state: Annotated[
        str | None, typer.Option("--state", help="pending, accepted or rejected.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
) -> None:
    """Feedback with the prediction it answers, oldest first."""
    store = _store()
    table = Table("id", "version", "text", "predicted", "answer", "state")
    for item in store.list_feedback(feature, state=state, limit=limit):
        answer = (
            item.corrected_label
            or item.corrected_answer
            or (f"thumb {item.thumb}" if item.thumb else "")
        )
        if item.comment:
            answer = f"{answer} “{item.comment}”".strip()
        text = item.text if len(item.text) <= 60 else item.text[:59] + "…"
        table.add_row(
            str(item.id), f"v{item.version}", text, item.predicted, answer, item.review_state
        )
    print_table(console, table)
    counts = store.feedback_counts(feature)
    console.print(", ".join(f"{n} {state}" for state, n in counts.items()))


@feedback_app.command("export")
def feedback_export(
    feature: Annotated[str, typer.Argument(help="Feature name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="A .jsonl or .csv file.")],
    state: Annotated[
        str | None, typer.Option("--state", help="Only pending, accepted or rejected.")
    ] = None,
) -> None:
    """Write feedback to JSONL or CSV, to review in a spreadsheet and import back.

    PII is redacted; a CSV cell that a spreadsheet would run as a formula (starting with
    = + - @, a tab or a carriage return) is written with a ' in front (import removes it).
    """
    from aiflywheel.data.spreadsheet import csv_text
    from aiflywheel.store.redaction import redact_json

    items = _store().list_feedback(feature, state=state)
    kind = _file_kind(output)
    # The redaction gate again: rows stored before it existed are redacted on the way out.
    rows = [redact_json(_export_row(item)) for item in items]
    if kind == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        text = csv_text(EXPORT_COLUMNS, rows)  # formula cells neutralized for spreadsheets
    write_text_atomic(output, text)
    console.print(f"wrote {len(rows)} feedback item(s) to {output}")


@feedback_app.command("import")
def feedback_import(
    feature: Annotated[str, typer.Argument(help="Feature name.")],
    source: Annotated[Path, typer.Argument(help="A .jsonl or .csv file (as export writes).")],
    actor: ActorOption = None,
) -> None:
    """Apply review decisions from a file: review_state and corrected_label per feedback id.

    Rows without an ``id`` but with a ``prediction_id`` add new feedback to that
    prediction. All or nothing: one bad row (named by its line) changes nothing.
    """
    store = _store()
    rows = _read_rows(source)
    decisions: list[tuple[int, str, str | None]] = []
    new_items: list[tuple[int, dict[str, Any]]] = []
    for line, row in rows:
        state = (row.get("review_state") or "pending").strip()
        if state not in REVIEW_STATES:
            raise DataError(
                f"{source} line {line}: review_state must be one of "
                f"{', '.join(REVIEW_STATES)}, got {state!r}"
            )
        label = (row.get("corrected_label") or "").strip() or None
        raw_id = str(row.get("id") or "").strip()
        if raw_id:
            if not raw_id.isdigit():
                raise DataError(f"{source} line {line}: id must be a number, got {raw_id!r}")
            decisions.append((int(raw_id), state, label))
        elif str(row.get("prediction_id") or "").strip():
            new_items.append((line, {**row, "review_state": state, "corrected_label": label}))
        else:
            raise DataError(f"{source} line {line}: needs an id or a prediction_id")
    labels = {label for _, _, label in decisions if label} | {
        row["corrected_label"] for _, row in new_items if row["corrected_label"]
    }
    _check_labels(store, feature, labels, str(source))
    for line, row in new_items:
        found = store.get_prediction(str(row["prediction_id"]).strip())
        if found is None or found[1] != feature:
            raise DataError(
                f"{source} line {line}: no prediction {row['prediction_id']!r} of {feature}"
            )
    changed = store.review_feedback(feature, decisions, reviewer=_actor(actor)) if decisions else 0
    added = []
    for _, row in new_items:
        created, _ = store.add_feedback(
            str(row["prediction_id"]).strip(),
            corrected_label=row["corrected_label"],
            thumb=(row.get("thumb") or None),
            comment=(row.get("comment") or None),
        )
        added.append((created.id, row["review_state"], None))
    if added:
        store.review_feedback(feature, added, reviewer=_actor(actor))
    console.print(f"updated {changed} and added {len(added)} feedback item(s) of {feature}")


@feedback_app.command("review")
def feedback_review(
    feature: Annotated[str, typer.Argument(help="Feature name.")],
    accept: Annotated[bool, typer.Option("--accept", help="Accept the selected items.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Reject the selected items.")] = False,
    ids: Annotated[
        str | None, typer.Option("--ids", help="Comma-separated feedback ids, e.g. 3,4,9.")
    ] = None,
    all_pending: Annotated[
        bool, typer.Option("--all-pending", help="Select every pending item.")
    ] = False,
    label: Annotated[
        str | None, typer.Option("--label", help="Set this corrected label on the selection.")
    ] = None,
    with_label: Annotated[
        bool,
        typer.Option(
            "--with-label", help="Only items that teach a label (a correction or a thumbs up)."
        ),
    ] = False,
    actor: ActorOption = None,
) -> None:
    """Accept or reject feedback in bulk (optionally correcting the label)."""
    if accept == reject:
        raise ConflictError("choose exactly one of --accept or --reject")
    if (ids is None) == (not all_pending):
        raise ConflictError("choose the items with exactly one of --ids or --all-pending")
    store = _store()
    if ids is not None:
        parts = [p.strip() for p in ids.split(",") if p.strip()]
        bad = [p for p in parts if not p.isdigit()]
        if bad or not parts:
            raise ConflictError(f"--ids must be comma-separated numbers, got {ids!r}")
        items = store.list_feedback(feature, ids=[int(p) for p in parts])
        missing = sorted(set(map(int, parts)) - {i.id for i in items})
        if missing:
            raise ConflictError(
                f"feature {feature!r} has no feedback with id(s) "
                f"{', '.join(map(str, missing[:10]))}"
            )
    else:
        items = store.list_feedback(feature, state="pending")
    if with_label:
        items = [item for item in items if item.label is not None]
    if label is not None:
        _check_labels(store, feature, {label}, "--label")
    state = "accepted" if accept else "rejected"
    changed = store.review_feedback(
        feature, [(item.id, state, label) for item in items], reviewer=_actor(actor)
    )
    console.print(f"{state} {changed} feedback item(s) of {feature}")


def retrain_command(
    feature: Annotated[str, typer.Argument(help="Feature name.")],
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", help="Use this recipe (e.g. new gate settings) instead."),
    ] = None,
    actor: ActorOption = None,
) -> None:
    """Training data + accepted feedback -> candidate -> gate -> promote or keep (audited)."""
    from aiflywheel.core.registry import get_task
    from aiflywheel.recipe import load_recipe
    from aiflywheel.settings import get_settings

    store = _store()
    row = store.get_feature(feature)
    if row is None:
        raise NotFoundError(f"unknown feature {feature!r}; run `flywheel train` on its recipe")
    result = get_task(row.task).retrain(
        feature,
        store=store,
        settings=get_settings(),
        actor=_actor(actor),
        recipe=load_recipe(recipe) if recipe else None,
        report=lambda line: console.print(f"[dim]·[/dim] {escape(line)}", highlight=False),
    )
    gate = result.gate
    champ, cand = f"v{result.champion_version}", f"v{result.candidate_version}"
    table = Table(result.metric, champ + " (champion)", cand + " (candidate)")
    rows = getattr(
        result,
        "score_rows",
        (("test", "frozen test"), ("feedback", "held-out feedback"), ("all", "both")),
    )
    for key, name in rows:
        if gate.champion.get(key) is not None:
            table.add_row(name, f"{gate.champion[key]:.4f}", f"{gate.candidate[key]:.4f}")
    print_table(console, table)
    for check in gate.checks:
        mark = "[green]pass[/green]" if check["passed"] else "[red]fail[/red]"
        console.print(f"  {mark} {check['check']}: {escape(check['detail'])}", highlight=False)
    verb = "promoted" if result.decision == "promoted" else "kept out"
    console.print(
        f"\n[bold]{feature} {cand} {verb}[/bold]: {escape(gate.reason)}\n"
        f"audit event {result.audit_id}; gate figures: {result.run_dir / 'gate.json'}",
        highlight=False,
    )


def promote_command(
    ref: Annotated[str, typer.Argument(help="FEATURE:VERSION, e.g. review-sentiment:2.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (written to the audit log).")] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote a version the gate refused or that did not beat its baseline "
            "(needs --reason).",
        ),
    ] = False,
    actor: ActorOption = None,
) -> None:
    """Make a version the champion that servers answer with (audited)."""
    from aiflywheel.core.versions import parse_version_ref, promote

    feature, version = parse_version_ref(ref)
    if version is None:
        raise ConflictError(f"name the version to promote, e.g. {feature}:2")
    event = promote(_store(), feature, version, actor=_actor(actor), reason=reason, force=force)
    before = f"v{event.from_version}" if event.from_version else "none"
    console.print(f"{feature}: champion v{version} (was {before}); audit event {event.id}")


def rollback_command(
    feature: Annotated[str, typer.Argument(help="Feature name.")],
    to: Annotated[
        int | None, typer.Option("--to", help="This version (default: the one replaced).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (written to the audit log).")] = "",
    actor: ActorOption = None,
) -> None:
    """Put back the previous champion (audited); servers switch without a restart."""
    from aiflywheel.core.versions import rollback

    event = rollback(_store(), feature, actor=_actor(actor), reason=reason, to_version=to)
    console.print(
        f"{feature}: champion v{event.to_version} (rolled back from v{event.from_version}); "
        f"audit event {event.id}"
    )


def audit_command(
    feature: Annotated[str, typer.Argument(help="Feature name.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines with every figure.")] = False,
) -> None:
    """Every decision about which version serves: who, when, from/to, why."""
    events = _store().list_audit(feature)
    if as_json:
        for event in events:
            sys.stdout.write(json.dumps(event.to_json(feature), ensure_ascii=False) + "\n")
        return
    table = Table("id", "when", "action", "who", "from", "to", "decision", "reason")
    for event in events:
        table.add_row(
            str(event.id),
            f"{event.created_at:%Y-%m-%d %H:%M:%S}",
            event.action,
            event.actor,
            f"v{event.from_version}" if event.from_version else "-",
            f"v{event.to_version}" if event.to_version else "-",
            event.decision,
            event.reason,
        )
    print_table(console, table)


def _export_row(item: FeedbackItem) -> dict[str, Any]:
    row = item.to_json()
    return {key: row.get(key) for key in EXPORT_COLUMNS}


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise DataError(f"feedback file {path} must end in .jsonl or .csv, got {suffix or 'none'!r}")


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    kind = _file_kind(path)
    if not path.is_file():
        raise DataError(f"feedback file not found: {path}")
    try:
        # Bytes, not read_text: a CR inside a quoted CSV cell must stay a CR.
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} must be UTF-8 text") from None
    from aiflywheel.data.spreadsheet import restore_cell

    rows: list[tuple[int, dict[str, Any]]] = []
    if kind == "jsonl":
        for line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {line} is not JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path} line {line}: expected a JSON object")
            rows.append((line, obj))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or "review_state" not in reader.fieldnames:
            raise DataError(f"{path}: the header needs a review_state column")
        for record in reader:
            restored = {
                key: restore_cell(value) if isinstance(value, str) else value
                for key, value in record.items()
            }
            rows.append((reader.line_num, restored))
    if not rows:
        raise DataError(f"{path} holds no feedback rows")
    return rows


def demo_turn_command(
    feature: Annotated[str, typer.Argument(help="Feature name.")] = "review-sentiment",
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--source", help="Labelled data the users draw from (repeatable; held-back rows)."
        ),
    ] = None,
    users: Annotated[
        int, typer.Option("--users", min=10, help="How many texts the users send.")
    ] = 1500,
    seed: Annotated[int, typer.Option("--seed", help="Which held-back texts.")] = 7,
) -> None:
    """One full turn over HTTP: serve, predict, answer, review, retrain, gate, hot swap."""
    from aiflywheel.settings import get_settings
    from aiflywheel.tasks.text_classification.demo_turn import turn_the_wheel

    store = _store()
    settings = get_settings()
    result = turn_the_wheel(
        feature,
        store=store,
        settings=settings,
        sources=sources or ["demo:zh-reviews"],
        users=users,
        seed=seed,
        report=lambda line: console.print(f"[dim]·[/dim] {escape(line)}", highlight=False),
    )
    verb = "promoted" if result.decision == "promoted" else "kept out by the gate"
    console.print(
        f"\n[bold]{feature}: v{result.served_version} served {result.predictions} predictions "
        f"({result.accuracy_before:.1%} right by the users' labels), {result.corrections} "
        f"corrections; v{result.candidate_version} {verb}; the server answers with "
        f"v{result.answered_by_after}.[/bold]\n"
    )
    audit_command(feature, as_json=False)
    default_home = settings.home == Path(".flywheel").absolute()
    home = "" if default_home else f"FLYWHEEL_HOME={settings.home} "
    console.print(
        "\nTry it yourself:\n"
        f"  {home}flywheel serve --no-auth --port 8000 &\n"
        f"  curl -s localhost:8000/v1/classify -H 'Content-Type: application/json' "
        f"""-d '{{"feature": "{feature}", "text": "房间很干净，服务也很周到"}}'""",
        highlight=False,
        soft_wrap=True,
    )
