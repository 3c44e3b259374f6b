"""Insights: what users keep saying, correcting and asking a person about, as topics.

``mine_insights(feature, store=..., settings=...)`` gathers three kinds of text of a
feature, each already redacted by the store:

- ``feedback``: feedback comments that do not annotate a correction;
- ``correction``: the inputs users corrected (the text of the prediction they fixed);
- ``handoff``: questions a conversational feature handed to a person (``Task.handoff_questions``).

Each kind is embedded (the packaged e5-small encoder when it loads, else TF-IDF character
2-4-grams reduced by SVD; ``InsightsReport.embedding`` says which), clustered with
scikit-learn's KMeans with the number of topics chosen by the silhouette score, and each
cluster becomes a topic: its size, count per day, language mix, the examples closest to
its centre and a title of its top terms (class-based TF-IDF over words, jieba for
Chinese).

For features that hand questions to a person, ``gaps`` lists "questions the knowledge
does not cover": the handoffs that were not requests for a person, clustered the same
way and ranked by volume, each with a draft FAQ answer (the closest passage of the
serving version's knowledge, ``Task.draft_answer``, or a template to edit) and the ticket
ids. ``send_gap_draft`` sends a reviewer's edited draft to the review queue as the answer
to one of those tickets (``Task.send_draft``); once accepted, the next retrain puts it in
the knowledge base.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aiflywheel.data.language import detect_language
from aiflywheel.errors import DataError, NotFoundError, require_module
from aiflywheel.store import Store

Source = Literal["feedback", "correction", "handoff"]
Embedder = Literal["auto", "e5-small", "tfidf"]
EXAMPLES = 3
TITLE_TERMS = 3
MIN_SILHOUETTE = 0.05  # below this, k topics are no better than one
DRAFT_TEMPLATE = (
    "[Draft: no passage of the knowledge base answers this yet. Write the answer the "
    "customer should get.] Q: {question}"
)
_LATIN = re.compile(r"[a-z][a-z0-9']+")
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_STOP_TEXT = """
a an the and or but if of to in on at for with from by is are was were be been am i me my
we our you your he she it its they them this that these those do does did not no yes can
could would should will just so very too than then there here what when where which who
why how all any some more most much many have has had get got about into out up down over
again also only own same such as because while until
的 了 是 我 你 他 她 它 们 在 和 有 也 就 都 吗 呢 吧 啊 不 没 很 这 那 一 个 要 会 能 把 被 给 还
"""
STOPWORDS = frozenset(_STOP_TEXT.split())


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DayCount(_Model):
    day: str = Field(description="UTC date, YYYY-MM-DD.")
    count: int


class Topic(_Model):
    topic_id: int
    title: str = Field(description="The topic's top terms.")
    size: int = Field(description="Texts in the topic.")
    trend: list[DayCount] = Field(description="Texts per day, oldest first.")
    languages: dict[str, int] = Field(description="Texts per language (zh, en, mixed, other).")
    examples: list[str] = Field(description="The texts closest to the topic's centre (redacted).")
    source: Source


class Gap(_Model):
    question: str = Field(description="The most central question of the group.")
    volume: int = Field(description="Handoffs in the group.")
    draft_answer: str = Field(description="A starting point for the FAQ answer, to edit.")
    draft_from: Literal["knowledge", "template"] = Field(
        description="knowledge: the closest passage of the serving version's knowledge."
    )
    ticket_ids: list[int] = Field(description="The handoff tickets of the group.")
    open_ticket_ids: list[int] = Field(
        description="Those nobody answered yet (the others' answers are in review or learned)."
    )
    examples: list[str] = Field(description="Other questions of the group.")


class InsightsReport(_Model):
    feature: str
    topics: list[Topic]
    gaps: list[Gap]
    # Not in model_dump (the console's interface has exactly feature, topics, gaps):
    embedding: str = Field(exclude=True, description="How texts were embedded for clustering.")
    texts: dict[str, int] = Field(exclude=True, description="Texts mined, per source.")


@dataclass(frozen=True)
class _Text:
    text: str
    created_at: datetime
    source: str
    ref: int | None = None


# -- embedding and clustering ----------------------------------------------------------------


def tfidf_embed(texts: Sequence[str], seed: int = 0, dims: int = 48) -> np.ndarray:
    """Unit rows in a TF-IDF character 2-4-gram space (SVD-reduced when it is large)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    matrix = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True
    ).fit_transform(texts)
    components = min(dims, matrix.shape[1] - 1, len(texts) - 1)
    if components >= 2 and matrix.shape[1] > dims:
        return normalize(
            TruncatedSVD(n_components=components, random_state=seed).fit_transform(matrix)
        )
    return normalize(matrix.toarray())


def choose_embedder(embedder: Embedder, settings) -> tuple[str, Callable[[list[str]], np.ndarray]]:
    """(name, texts -> unit rows): e5-small when asked or, for ``auto``, when it loads."""
    if embedder == "tfidf":
        return "tfidf char 2-4-grams (SVD)", tfidf_embed
    from aiflywheel.errors import FlywheelError

    try:
        from aiflywheel.tasks.assistant.encoders import E5SmallEncoder

        encoder = E5SmallEncoder.load(settings)
    except (FlywheelError, ImportError, OSError) as exc:
        if embedder == "e5-small":
            raise
        reason = str(exc).splitlines()[0][:80]
        return f"tfidf char 2-4-grams (SVD); e5-small unavailable: {reason}", tfidf_embed
    return "e5-small (packaged)", lambda texts: np.asarray(encoder.encode_queries(list(texts)))


def cluster(vectors: np.ndarray, max_topics: int, seed: int) -> np.ndarray:
    """Cluster labels: KMeans with k in 2..max_topics chosen by silhouette (one cluster
    when no k separates the texts, or there are too few)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(vectors)
    if n < 4 or max_topics < 2:
        return np.zeros(n, dtype=int)
    distinct = len(np.unique(np.round(vectors, 8), axis=0))
    best, best_score = np.zeros(n, dtype=int), MIN_SILHOUETTE
    for k in range(2, min(max_topics, n - 1, distinct) + 1):
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(vectors)
        if len(set(labels)) < 2:
            continue
        score = silhouette_score(vectors, labels, metric="cosine")
        if score > best_score + 1e-9:
            best, best_score = labels, score
    return best


def terms(text: str) -> list[str]:
    """Title terms: Latin words and, for Chinese, jieba's words (Han runs when jieba is
    not installed); stop words and one-letter words left out."""
    out = [w for w in _LATIN.findall(text.lower()) if w not in STOPWORDS]
    runs = _HAN_RUN.findall(text)
    if runs:
        try:
            import jieba

            jieba.setLogLevel(60)
            pieces = [w for run in runs for w in jieba.lcut(run)]
        except ImportError:
            pieces = runs
        out += [w for w in pieces if len(w) > 1 and w not in STOPWORDS]
    return out


def titles(groups: Sequence[Sequence[str]], n_terms: int = TITLE_TERMS) -> list[str]:
    """Class-based TF-IDF: a term's frequency in the group times log(1 + average group
    size in terms / the term's frequency over every group)."""
    counts = [Counter(t for text in group for t in terms(text)) for group in groups]
    total = Counter()
    for c in counts:
        total.update(c)
    average = sum(total.values()) / max(1, len(groups))
    out = []
    for c in counts:
        size = max(1, sum(c.values()))
        scored = sorted(c, key=lambda t: (-(c[t] / size) * math.log(1 + average / total[t]), t))
        out.append(" / ".join(scored[:n_terms]) or "(no words)")
    return out


def _central(vectors: np.ndarray, members: np.ndarray, k: int) -> list[int]:
    centre = vectors[members].mean(axis=0)
    distances = np.linalg.norm(vectors[members] - centre, axis=1)
    return [int(members[i]) for i in np.argsort(distances, kind="stable")[:k]]


@dataclass
class _Group:
    members: list[int]
    central: list[int]


def _groups(
    vectors: np.ndarray, languages: Sequence[str], max_topics: int, seed: int
) -> list[_Group]:
    """Groups of similar texts, clustered within each language: across languages the
    script dominates any distance (a TF-IDF one splits zh from en before any topic), so a
    topic asked in Chinese and in English is two groups, each with its own examples."""
    out = []
    for language in sorted(set(languages)):
        where = np.flatnonzero(np.asarray(languages) == language)
        labels = cluster(vectors[where], max_topics, seed)
        for label in sorted(set(labels.tolist())):
            members = where[np.flatnonzero(labels == label)]
            out.append(_Group(members.tolist(), _central(vectors, members, len(members))))
    return sorted(out, key=lambda g: (-len(g.members), g.members[0]))


# -- the report ------------------------------------------------------------------------------


def _texts(feature: str, store: Store, handoffs) -> list[_Text]:
    out: list[_Text] = []
    for item in store.list_feedback(feature):
        if item.correction:
            out.append(_Text(item.text, item.created_at, "correction", item.id))
        elif (item.comment or "").strip():
            out.append(_Text(item.comment.strip(), item.created_at, "feedback", item.id))
    for q in handoffs:
        out.append(_Text(q.text, q.created_at, "handoff", q.ref))
    return out


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def mine_insights(
    feature: str,
    *,
    store: Store,
    settings,
    max_topics: int = 12,
    embedder: Embedder = "auto",
) -> InsightsReport:
    """Topics of ``feature``'s feedback, corrections and handoffs, and the questions its
    knowledge does not cover (see the module docstring)."""
    from aiflywheel.core.registry import get_task
    from aiflywheel.monitoring.drift import feature_recipe

    if isinstance(max_topics, bool) or not isinstance(max_topics, int) or max_topics < 1:
        raise DataError(f"max_topics must be a whole number of at least 1, got {max_topics!r}")
    require_module("sklearn", what="flywheel insights", install="pip install 'aiflywheel[train]'")
    recipe, task_name = feature_recipe(store, feature)
    task = get_task(task_name)
    handoffs = task.handoff_questions(feature, store=store)
    items = _texts(feature, store, handoffs)
    uncovered = {q.ref for q in handoffs if q.uncovered}
    still_open = {q.ref for q in handoffs if q.open}
    counts = Counter(i.source for i in items)
    if not items:
        return InsightsReport(
            feature=feature, topics=[], gaps=[], embedding="none (no texts)", texts={}
        )
    name, embed = choose_embedder(embedder, settings)
    vectors = np.asarray(embed([i.text for i in items]), dtype=float)
    languages = [detect_language(i.text) for i in items]
    topics: list[Topic] = []
    for source in ("feedback", "correction", "handoff"):
        picked = [n for n, i in enumerate(items) if i.source == source]
        if not picked:
            continue
        groups = _groups(
            vectors[picked], [languages[n] for n in picked], max_topics, recipe.seed
        )
        named = titles([[items[picked[m]].text for m in g.members] for g in groups])
        for group, title in zip(groups, named, strict=True):
            members = [items[picked[m]] for m in group.members]
            topics.append(
                Topic(
                    topic_id=0,
                    title=title,
                    size=len(members),
                    trend=[
                        DayCount(day=d, count=c)
                        for d, c in sorted(Counter(_day(m.created_at) for m in members).items())
                    ],
                    languages=dict(Counter(languages[picked[m]] for m in group.members)),
                    examples=[items[picked[m]].text for m in group.central[:EXAMPLES]],
                    source=source,
                )
            )
    topics.sort(key=lambda t: -t.size)
    topics = topics[:max_topics]
    for number, topic in enumerate(topics, 1):
        topic.topic_id = number
    gaps = _gaps(
        feature, store, task, items, vectors, languages, uncovered, still_open, max_topics,
        recipe.seed,
    )
    return InsightsReport(
        feature=feature, topics=topics, gaps=gaps, embedding=name, texts=dict(counts)
    )


def _gaps(
    feature, store, task, items, vectors, languages, uncovered, still_open, max_topics, seed
):
    picked = [n for n, i in enumerate(items) if i.source == "handoff" and i.ref in uncovered]
    if not picked:
        return []
    champion = store.champion(feature)
    gaps = []
    for group in _groups(vectors[picked], [languages[n] for n in picked], max_topics, seed):
        central = [items[picked[m]] for m in group.central]
        question = central[0].text
        draft = task.draft_answer(champion.model_path, question) if champion else None
        gaps.append(
            Gap(
                question=question,
                volume=len(group.members),
                draft_answer=draft or DRAFT_TEMPLATE.format(question=question),
                draft_from="knowledge" if draft else "template",
                ticket_ids=sorted(int(items[picked[m]].ref) for m in group.members),
                open_ticket_ids=sorted(
                    int(items[picked[m]].ref)
                    for m in group.members
                    if items[picked[m]].ref in still_open
                ),
                examples=[c.text for c in central[1 : 1 + EXAMPLES]],
            )
        )
    return sorted(gaps, key=lambda g: (-g.volume, -len(g.open_ticket_ids), g.question))


def send_gap_draft(
    feature: str, ticket_id: int, answer: str, *, store: Store, actor: str
) -> dict[str, Any]:
    """Send a reviewer's edited FAQ draft for a gap's ticket to the review queue."""
    from aiflywheel.core.registry import get_task
    from aiflywheel.monitoring.drift import feature_recipe

    if not (answer or "").strip():
        raise DataError("answer: empty; give the FAQ answer the customer should get")
    _, task_name = feature_recipe(store, feature)
    if isinstance(ticket_id, bool) or not isinstance(ticket_id, int):
        raise NotFoundError(f"ticket id must be a number, got {ticket_id!r}")
    return get_task(task_name).send_draft(
        feature, ticket_id, answer.strip(), store=store, actor=actor
    )


__all__ = [
    "DayCount",
    "Gap",
    "InsightsReport",
    "Topic",
    "cluster",
    "mine_insights",
    "send_gap_draft",
    "terms",
    "tfidf_embed",
    "titles",
]
