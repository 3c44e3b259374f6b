"""The task contract: what a kind of AI feature gives the shared loop.

The loop (train -> register -> serve -> log -> feedback -> review -> retrain -> gate ->
promote / rollback -> audit) is the same for every task; what differs is behind this
Protocol. A task is one folder under ``tasks/`` whose package exposes ``TASK``, an object
satisfying ``Task``, and one line in ``core.registry``. Code outside ``tasks/`` asks the
registry for the recipe's task and calls these methods; it never branches on a task name.
If a new task needs such a branch, the contract is missing a method: add it here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from aiflywheel.core.version_metrics import VersionMetrics
    from aiflywheel.recipe import Recipe
    from aiflywheel.settings import Settings
    from aiflywheel.store import Store

Report = Callable[[str], None]


@dataclass(frozen=True)
class Quality:
    """A version's figures as every task reports them: one primary metric with its 95% CI,
    the baseline's value of the same metric, and any other figures worth a column."""

    metric: str
    value: float | None
    ci: tuple[float, float] | None = None
    baseline_name: str | None = None
    baseline_value: float | None = None
    beats_baseline: bool | None = None
    others: Mapping[str, float] = field(default_factory=dict)

    @property
    def evaluated(self) -> bool:
        return self.value is not None

    def cells(self) -> tuple[str, str]:
        """(quality, baseline) as one line each, for tables."""
        if self.value is None:
            return "not evaluated", "–"
        quality = f"{self.metric} {self.value:.3f}"
        if self.ci is not None:
            quality += f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]"
        if self.others:
            quality += ", " + ", ".join(f"{k} {v:.2f}" for k, v in self.others.items())
        if self.baseline_value is None:
            return quality, "–"
        verdict = {True: "beaten", False: "not beaten", None: ""}[self.beats_baseline]
        return quality, f"{self.baseline_value:.3f} ({verdict})".replace(" ()", "")

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "ci": list(self.ci) if self.ci is not None else None,
            "baseline_name": self.baseline_name,
            "baseline_value": self.baseline_value,
            "beats_baseline": self.beats_baseline,
            "others": dict(self.others),
        }


class PredictionPayload(BaseModel):
    """What a prediction answered, as the prediction log stores it (``predictions.output``).

    Every task's output has ``label``: what was predicted in one word (a classifier's label,
    an assistant answer's kind), which reviews show; a task's model adds the rest.
    """

    model_config = ConfigDict(extra="allow")

    label: str = Field(description="What was predicted, in one word.")


class FeedbackPayload(BaseModel):
    """What a user may answer about a prediction (``feedback.payload``): a thumb and a
    comment on any task; a task's model adds its correction (a ``corrected_*`` field, of
    which a prediction holds one). Validated with ``context={"prediction": <the
    prediction's PredictionPayload>, "feature": <name>}``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    # Fields another task would accept, with the hint this task gives instead.
    misplaced: ClassVar[Mapping[str, str]] = {}

    thumb: Literal["up", "down"] | None = Field(None, description="Was the answer good?")
    comment: str | None = Field(None, max_length=10_000, description="Free text.")

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackPayload:
        if not any(value for value in self.model_dump().values()):
            names = sorted(type(self).model_fields, key=lambda n: (not n.startswith("corr"), n))
            raise ValueError(f"give at least one of {', '.join(names)}")
        return self

    def stored(self) -> dict[str, Any]:
        """The JSON the store keeps: the fields given."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def problems(cls, exc: ValidationError) -> list[dict[str, Any]]:
        """``exc``'s errors, with a field of another task's answer explained (``misplaced``)."""
        out = []
        for error in exc.errors():
            key = error["loc"][0] if error["loc"] else None
            if error["type"] == "extra_forbidden" and key in cls.misplaced:
                error = {**error, "type": "value_error", "msg": cls.misplaced[key]}
            out.append(error)
        return out


def parse_feedback(
    task: Task, payload: Mapping[str, Any], output: Mapping[str, Any], *, feature: str
) -> FeedbackPayload:
    """``payload`` as ``task``'s feedback model, checked against the prediction it answers.

    Raises ``pydantic.ValidationError`` (its errors name the field; see
    ``FeedbackPayload.problems`` for the wording a client sees).
    """
    prediction = task.prediction_payload.model_validate(dict(output))
    return task.feedback_payload.model_validate(
        dict(payload), context={"prediction": prediction, "feature": feature}
    )


@dataclass
class Built:
    """What training (or building) a version registered."""

    feature: str
    run_id: str
    run_dir: Path
    version: int
    status: str
    headline: str
    report_html: Path | None = None
    details: Any = None


@dataclass(frozen=True)
class BatchAnswer:
    """One input row of a batch prediction file, answered (``flywheel predict --input``).

    ``stored`` is the input as the output file keeps it: what the prediction log would
    store for it (cleaned, PII redacted). ``output`` is the prediction payload (it has
    ``label``), or None with ``error`` saying why this row got no prediction."""

    stored: str
    output: dict[str, Any] | None
    error: str | None = None


@dataclass
class DriftReference:
    """What a version learned from, as drift checks compare live traffic with it.

    ``texts``: inputs the version learned from (a seeded sample); ``vocabulary_texts``:
    the texts whose words make the training vocabulary; ``heldout_texts``: inputs of the
    same data the version did not learn from (their out-of-vocabulary share is the
    reference one, unbiased); ``heldout_outputs``: the version's outputs on them (each a
    ``PredictionPayload`` JSON with a ``confidence`` or ``probabilities``), empty when
    they cannot be had cheaply; ``source``: where it all came from, in words.
    """

    texts: list[str]
    vocabulary_texts: list[str]
    heldout_texts: list[str]
    heldout_outputs: list[dict[str, Any]]
    source: str


@dataclass(frozen=True)
class HandoffQuestion:
    """A question a conversational feature handed to a person (insights mine these)."""

    ref: int  # the ticket's id (what ``Task.send_draft`` answers)
    text: str  # the question, as the store keeps it (redacted)
    created_at: Any  # datetime
    uncovered: bool  # True: the knowledge did not answer it (not a request for a person)
    open: bool = True  # False: someone already answered it (the answer is in review)


@runtime_checkable
class Task(Protocol):
    """One kind of AI feature. ``core.registry.get_task(name)`` returns the object."""

    name: str
    summary: str
    conversational: bool  # answers through /v1/chat/completions rather than /v1/classify
    min_labels: int  # distinct labels the data must have after cleaning (0: none needed)
    owns_sections: tuple[str, ...]  # recipe sections only this task may set
    prediction_payload: type[PredictionPayload]  # what ``predictions.output`` holds
    feedback_payload: type[FeedbackPayload]  # what ``POST /v1/feedback`` may send
    # The column of a batch prediction file that holds each row's input; None: the task
    # answers in conversation, not over files (``flywheel predict --input`` refuses it).
    batch_input: str | None
    predict_route: str  # where a served version answers (``/v1/classify``, ``/v1/predict``...)

    def chat_handler(self) -> Callable[..., Any] | None:
        """The coroutine answering ``POST /v1/chat/completions`` for this task's features,
        called as ``handler(raw_json_body, state=..., principal=..., session_header=...)``;
        None for tasks that do not chat (the shared route then answers 422)."""

    def check_recipe(self, recipe: Recipe) -> None:
        """Raise ``RecipeError`` when the recipe lacks what this task needs."""

    def train(self, recipe: Recipe, *, store: Store, settings: Settings, report: Report) -> Built:
        """Prepare data, train, evaluate against the baseline, register a version."""

    def show_built(self, built: Built) -> None:
        """Print what a product manager reads after ``flywheel train``."""

    def api_router(self) -> Any:
        """The task's own REST routes (a FastAPI router), or None."""

    def quality(self, metrics: VersionMetrics) -> Quality:
        """The primary metric (with CI) and baseline of a registered version's metrics."""

    def load_predictor(
        self, model_path: str | Path, *, feature: str, version: int, store: Store | None = None
    ) -> Any:
        """The predictor of a registered version's folder (``.predict`` / ``.ask``)."""

    def predict_batch(
        self, predictor: Any, inputs: list[str], *, recipe: Mapping[str, Any]
    ) -> list[BatchAnswer]:
        """One ``BatchAnswer`` per input (non-blank strings, a chunk of a batch file), from
        the predictor ``load_predictor`` gave and the recipe the version was trained with.
        Only called when ``batch_input`` is not None."""

    def warm_up(self, served: Any) -> None:
        """Run one input through a freshly loaded served model (``serve.ServedModel``)
        before it takes requests; a conversational task's host warms its own."""

    def compress(
        self,
        feature: str,
        version: int | None,
        *,
        store: Store,
        settings: Settings,
        recipe: Recipe | None,
        report: Report,
    ) -> Any:
        """``flywheel compress``: smaller variants of a version, each gated and registered
        (an ``aiflywheel.compress.CompressResult``); ModelError when the task has none."""

    def retrain(
        self,
        feature: str,
        *,
        store: Store,
        settings: Settings,
        actor: str,
        report: Report,
        recipe: Recipe | None = None,
    ) -> Any:
        """Champion's data + accepted feedback -> candidate -> gate -> promote or keep."""

    def drift_reference(
        self,
        model_path: str | Path,
        *,
        feature: str,
        store: Store,
        limit: int,
        seed: int,
        with_outputs: bool = True,
    ) -> DriftReference:
        """The training data of a registered version's folder, for drift checks (without
        ``heldout_outputs`` when ``with_outputs`` is False: texts only, no model run)."""

    def drift_encoder(
        self, model_path: str | Path, *, settings: Settings
    ) -> tuple[str, Callable[[list[str]], Any]] | None:
        """(name, texts -> embedding matrix) of the version's own encoder, or None when it
        has none worth using (drift checks then use a TF-IDF projection)."""

    def handoff_questions(self, feature: str, *, store: Store) -> list[HandoffQuestion]:
        """Questions handed to a person (empty for tasks that never hand off)."""

    def draft_answer(self, model_path: str | Path, question: str) -> str | None:
        """A starting point for a FAQ answer to ``question``: the closest passage of the
        version's knowledge, or None for tasks without one."""

    def send_draft(
        self, feature: str, ref: int, answer: str, *, store: Store, actor: str
    ) -> dict[str, Any]:
        """Send a reviewer's edited answer to handoff ``ref`` into the review queue (from
        where an accepted answer reaches the knowledge); raises for tasks without one."""
