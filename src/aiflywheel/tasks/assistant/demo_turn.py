"""One turn of the assistant's wheel over HTTP, for ``make demo`` (``flywheel demo
assistant-turn``).

``turn_the_assistant`` serves the champion with ``flywheel serve`` (a subprocess on a free
loopback port, with API keys) and plays a day of support with the questions the help
center does not cover (``help_center/eval_uncovered.jsonl``: per topic and language, the
support team's answer, questions customers ask, and held-out paraphrases nobody answers):

1. before: the held-out paraphrases are asked; a reply is right when it states the
   team's answer (``retrain.states_answer``);
2. customers ask their questions; a handoff opens a ticket that staff answer
   (``POST /v1/features/{name}/tickets/{id}/answer``), a wrong answer gets a thumbs down
   with the team's answer (``POST /v1/feedback``): one review queue;
3. a reviewer accepts the answers; ``flywheel retrain`` builds the candidate and the
   gate decides; the running server swaps to the new champion without a restart;
4. after: the same held-out paraphrases are asked again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiflywheel.errors import ConflictError, DataError, ModelError
from aiflywheel.settings import Settings
from aiflywheel.store import Store

Report = Callable[[str], None]
DEMO_QUESTIONS = "demo:help-center-uncovered"


@dataclass(frozen=True)
class Topic:
    topic: str
    language: str
    answer: str
    asked: tuple[str, ...]
    check: tuple[str, ...]


def load_topics(value: str = DEMO_QUESTIONS) -> list[Topic]:
    """Topics of a JSONL file (or the shipped ones) as ``eval_uncovered.jsonl`` holds them."""
    from aiflywheel.tasks.assistant.build import help_center_dir

    path = help_center_dir() / "eval_uncovered.jsonl" if value == DEMO_QUESTIONS else Path(value)
    if not path.is_file():
        raise DataError(f"uncovered questions {value!r}: {path} is not a file")
    topics = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            topics.append(
                Topic(
                    topic=str(raw["topic"]),
                    language=str(raw.get("language", "")),
                    answer=str(raw["answer"]).strip(),
                    asked=tuple(raw["asked"]),
                    check=tuple(raw["check"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path} line {number}: needs topic, answer, asked and check ({exc})"
            ) from None
    if not topics:
        raise DataError(f"{path} has no topics")
    return topics


@dataclass
class Figures:
    """How the held-out paraphrases were answered by one version."""

    version: int
    questions: int
    right: int
    handoffs: int
    wrong: int
    by_language: dict[str, tuple[int, int]] = field(default_factory=dict)  # right, asked

    @property
    def accuracy(self) -> float:
        return self.right / self.questions if self.questions else 0.0


@dataclass
class AssistantTurnResult:
    before: Figures
    after: Figures
    asked: int
    tickets: int
    corrections: int
    accepted: int
    decision: str
    champion_version: int
    candidate_version: int
    gate: Any  # retrain.GateResult
    data: dict[str, int]


def _ask(client, feature: str, question: str, session: str) -> dict[str, Any]:
    body = {
        "model": feature,
        "messages": [{"role": "user", "content": question}],
        "session_id": session,
    }
    status, reply = client.call("POST", "/v1/chat/completions", body)
    if status != 200:
        raise ModelError(f"chat answered {status}: {reply}")
    return {"text": reply["choices"][0]["message"]["content"], **reply["flywheel"]}


def _figures(client, feature: str, topics: list[Topic], match: float, tag: str) -> Figures:
    from aiflywheel.tasks.assistant.retrain import states_answer

    right = handoffs = asked = 0
    version = None
    by_language: dict[str, list[int]] = {}
    for t in topics:
        for n, question in enumerate(t.check):
            reply = _ask(client, feature, question, f"{tag}-{t.topic}-{t.language}-{n}")
            version = reply["version"]
            ok = not reply["handoff"] and states_answer(reply["text"], t.answer, match)
            asked += 1
            right += ok
            handoffs += bool(reply["handoff"])
            counts = by_language.setdefault(t.language, [0, 0])
            counts[0] += ok
            counts[1] += 1
    return Figures(
        version=int(version or 0),
        questions=asked,
        right=right,
        handoffs=handoffs,
        wrong=asked - right - handoffs,
        by_language={k: (v[0], v[1]) for k, v in sorted(by_language.items())},
    )


def _describe(f: Figures) -> str:
    parts = ", ".join(f"{lang} {r}/{n}" for lang, (r, n) in f.by_language.items())
    return (
        f"v{f.version}: {f.right}/{f.questions} held-out questions answered with the team's "
        f"answer ({parts}); {f.handoffs} handed off, {f.wrong} answered wrongly"
    )


def turn_the_assistant(
    feature: str,
    *,
    store: Store,
    settings: Settings,
    questions: str = DEMO_QUESTIONS,
    report: Report = lambda _: None,
) -> AssistantTurnResult:
    """Serve -> before -> tickets and corrections -> review -> retrain -> gate -> hot swap
    -> after (see the module doc)."""
    from aiflywheel.recipe import parse_recipe
    from aiflywheel.tasks.assistant.retrain import retrain_assistant, states_answer
    from aiflywheel.tasks.text_classification.demo_turn import (
        Client,
        free_port,
        start_server,
        stop_server,
    )

    champion = store.champion(feature)
    if champion is None:
        raise ConflictError(f"{feature} has no champion; `flywheel train` its recipe first")
    row = store.get_feature(feature)
    recipe = parse_recipe(row.recipe, origin=f"stored recipe of {feature}")
    match = recipe.assistant.gate.answer_match
    topics = load_topics(questions)
    asked_total = sum(len(t.asked) for t in topics)
    report(
        f"{len(topics)} topics the help center does not cover: {asked_total} customer "
        f"questions, {sum(len(t.check) for t in topics)} held-out paraphrases"
    )
    client_key, _ = store.create_api_key("client", "demo customers")
    admin_key, _ = store.create_api_key("admin", "demo support team")
    port = free_port()
    server = start_server(port, settings, report)
    try:
        base = f"http://127.0.0.1:{port}"
        customers, staff = Client(base, client_key), Client(base, admin_key)
        before = _figures(customers, feature, topics, match, "before")
        report("before: " + _describe(before))

        tickets = corrections = 0
        for t in topics:
            for n, question in enumerate(t.asked):
                reply = _ask(customers, feature, question, f"customer-{t.topic}-{t.language}-{n}")
                if reply["handoff"]:
                    path = f"/v1/features/{feature}/tickets/{reply['ticket_id']}/answer"
                    status, body = staff.call("POST", path, {"answer": t.answer})
                    tickets += 1
                elif not states_answer(reply["text"], t.answer, match):
                    status, body = customers.call(
                        "POST",
                        "/v1/feedback",
                        {
                            "prediction_id": reply["prediction_id"],
                            "thumb": "down",
                            "corrected_answer": t.answer,
                        },
                    )
                    corrections += 1
                else:
                    continue
                if status not in (200, 201):
                    raise ModelError(f"staff answer refused ({status}): {body}")
        report(
            f"customers asked {asked_total}: {tickets} handed off (staff answered the tickets), "
            f"{corrections} answered wrongly (staff sent the right answer as feedback)"
        )
        pending = [i for i in store.list_feedback(feature, state="pending") if i.corrected_answer]
        store.review_feedback(
            feature, [(i.id, "accepted", None) for i in pending], reviewer="demo reviewer"
        )
        report(f"the reviewer accepted {len(pending)} answers")

        result = retrain_assistant(
            feature, store=store, settings=settings, actor="demo reviewer", report=report
        )
        report(result.gate.reason)
        expected = (
            result.candidate_version if result.decision == "promoted" else result.champion_version
        )
        deadline = time.monotonic() + 120
        while True:
            probe = _ask(customers, feature, topics[0].check[0], f"probe-{time.monotonic()}")
            if probe["version"] == expected:
                report(f"the running server now answers with v{expected} (no restart)")
                break
            if time.monotonic() > deadline:
                raise ConflictError(
                    f"the server still answers with v{probe['version']}, expected v{expected}"
                )
            time.sleep(0.5)
        after = _figures(customers, feature, topics, match, "after")
        report("after: " + _describe(after))
    finally:
        stop_server(server)
    return AssistantTurnResult(
        before=before,
        after=after,
        asked=asked_total,
        tickets=tickets,
        corrections=corrections,
        accepted=len(pending),
        decision=result.decision,
        champion_version=result.champion_version,
        candidate_version=result.candidate_version,
        gate=result.gate,
        data=result.data,
    )


__all__ = ["AssistantTurnResult", "Figures", "Topic", "load_topics", "turn_the_assistant"]
