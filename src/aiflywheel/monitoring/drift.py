"""Drift: does live traffic still look like what the serving version learned from?

``drift_report(feature, store=..., settings=...)`` compares the newest predictions of the
champion (the prediction log keeps the redacted input and the output) with the
champion's training data, which its task hands over (``Task.drift_reference``: a
classifier's frozen ``splits/``, an assistant's knowledge base and evaluation set):

=====================  =========  ===================================================
check                  statistic  what is compared
=====================  =========  ===================================================
input_length           psi, ks    characters per input
language_mix           psi        zh / en / mixed / other shares (by script)
oov_share              psi, ks    per input, the share of its words (Latin words, Han
                                  characters) missing from the training vocabulary;
                                  the reference is measured on held-out rows, so it
                                  is not biased to zero
prediction             psi        predicted labels (answer kinds) against the
                                  version's own predictions on held-out rows
confidence             psi, ks    the top probability (an answer's confidence), same
embedding              auc        a classifier two-sample test: cross-validated ROC
                                  AUC of a logistic regression telling window inputs
                                  from reference inputs in embedding space (0.5: no
                                  difference); the detail gives the cosine distance
                                  between the mean embeddings and the encoder used:
                                  the version's own (``Task.drift_encoder``) or a
                                  TF-IDF character n-gram projection (SVD) fitted on
                                  the reference
=====================  =========  ===================================================

Thresholds come from the recipe's ``monitor.drift`` (PSI above ``psi_threshold`` plus the
small-sample bias of PSI, ``psi_limit``, so the check's threshold grows for small samples; KS D
above ``ks_threshold`` with p below ``ks_pvalue``; AUC above ``embedding_auc``); a window
with fewer than ``min_rows`` predictions shows its figures but raises no alarm. Every
report is stored (``drift_reports``) and comes back with the feature's history.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aiflywheel.data.language import LANGUAGES, detect_language
from aiflywheel.errors import DataError, NotFoundError
from aiflywheel.store import Store

EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
MAX_EMBED_ROWS = 1000  # per side, for the two-sample test
HISTORY = 50
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[a-z]+|[0-9]+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftCheck(_Model):
    name: str = Field(description="What is compared, e.g. input_length.")
    statistic: str = Field(description="psi, ks or auc.")
    value: float = Field(description="The statistic's value.")
    threshold: float = Field(description="Above this the check alarms.")
    alarm: bool = Field(description="Whether this check raises the alarm.")
    detail: str = Field("", description="Reference vs window figures, in words.")


class DriftHistoryPoint(_Model):
    computed_at: str = Field(description="When the report was computed (ISO 8601, UTC).")
    alarm: bool
    worst_check: str | None = Field(description="The check furthest above its threshold.")
    worst_value: float | None


class DriftReport(_Model):
    feature: str
    version: int = Field(description="The version whose training data is the reference.")
    window_rows: int = Field(description="Predictions compared (newest first).")
    reference_rows: int = Field(description="Training texts in the reference sample.")
    computed_at: str
    alarm: bool = Field(description="Any check alarms (never with too few window rows).")
    checks: list[DriftCheck]
    history: list[DriftHistoryPoint] = Field(description="Stored reports, oldest first.")


# -- statistics ----------------------------------------------------------------------------


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two histograms over the same bins (counts or shares)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise DataError("psi needs two non-empty histograms over the same bins")
    e = np.clip(e / e.sum(), EPSILON, None)
    a = np.clip(a / a.sum(), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def category_psi(reference: Sequence[str], window: Sequence[str]) -> float:
    categories = sorted(set(reference) | set(window))
    ref, cur = Counter(reference), Counter(window)
    return psi([ref[c] for c in categories], [cur[c] for c in categories])


def psi_limit(threshold: float, bins: int, n_reference: int, n_window: int) -> float:
    """``threshold`` plus what PSI reads between two samples of one distribution: PSI is
    about a chi-square statistic over the sample sizes, so with no shift it averages
    ``(bins - 1) * (1/n_reference + 1/n_window)`` (0.24 for 10 bins, 60 and 100 rows);
    small windows would otherwise alarm on noise."""
    return round(threshold + max(0, bins - 1) * (1 / max(1, n_reference) + 1 / max(1, n_window)), 4)


def numeric_psi(
    reference: Sequence[float], window: Sequence[float], bins: int = 10, *, with_bins: bool = False
):
    """PSI over the reference's quantile bins (ties merge bins); with ``with_bins``, also
    the number of bins used."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(window, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1])
    ref_bins = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    cur_bins = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    value = psi(ref_bins, cur_bins)
    return (value, len(edges) + 1) if with_bins else value


def ks(reference: Sequence[float], window: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic D and its p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(reference, float), np.asarray(window, float))
    return float(result.statistic), float(result.pvalue)


def words(text: str) -> list[str]:
    """Vocabulary units: Han characters one by one, Latin words and digit runs lowercased."""
    return _HAN.findall(text) + _WORD.findall(text.lower())


def oov_shares(texts: Sequence[str], vocabulary: set[str]) -> list[float]:
    """Per text, the share of its words not in ``vocabulary`` (0 for a text without words)."""
    out = []
    for text in texts:
        units = words(text)
        out.append(sum(u not in vocabulary for u in units) / len(units) if units else 0.0)
    return out


def confidence_of(output: dict[str, Any]) -> float | None:
    """An output's confidence: its ``confidence``, else its top probability."""
    if output.get("confidence") is not None:
        return float(output["confidence"])
    probabilities = output.get("probabilities") or {}
    return float(max(probabilities.values())) if probabilities else None


def tfidf_projection(
    reference: Sequence[str], window: Sequence[str], seed: int, dims: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Both sides in a TF-IDF character 1-3-gram space fitted on the reference, reduced
    by truncated SVD (at most ``dims`` components)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), max_features=20_000)
    ref = vectorizer.fit_transform(reference)
    cur = vectorizer.transform(window)
    components = min(dims, ref.shape[1] - 1, len(reference) - 1)
    if components < 2:
        return ref.toarray(), cur.toarray()
    svd = TruncatedSVD(n_components=components, random_state=seed).fit(ref)
    return svd.transform(ref), svd.transform(cur)


def two_sample_auc(reference: np.ndarray, window: np.ndarray, seed: int) -> float:
    """Cross-validated ROC AUC of a logistic regression telling the two sides apart."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([reference, window])
    y = np.r_[np.zeros(len(reference)), np.ones(len(window))]
    folds = min(5, len(reference), len(window))
    if folds < 2:
        return 0.5
    scores = cross_val_predict(
        LogisticRegression(max_iter=1000, C=1.0),
        x,
        y,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        method="predict_proba",
    )[:, 1]
    return float(roc_auc_score(y, scores))


def mean_cosine_distance(reference: np.ndarray, window: np.ndarray) -> float:
    def mean_unit(m: np.ndarray) -> np.ndarray:
        rows = m / np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)
        return rows.mean(axis=0)

    a, b = mean_unit(reference), mean_unit(window)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(a @ b) / denominator if denominator > 0 else 1.0


# -- the report ----------------------------------------------------------------------------


def _shares(values: Sequence[str], order: Sequence[str]) -> str:
    counts = Counter(values)
    total = max(1, len(values))
    return ", ".join(f"{k} {counts[k] / total:.0%}" for k in order if counts[k])


def _mean(values: Sequence[float]) -> str:
    return f"{float(np.mean(values)):.3g}" if len(values) else "–"


class _Checks:
    def __init__(self, config, enough: bool) -> None:
        self.config, self.enough, self.items = config, enough, []

    def add(self, name: str, statistic: str, value: float, threshold: float, alarm: bool, detail):
        value = 0.0 if not math.isfinite(value) else value
        self.items.append(
            DriftCheck(
                name=name,
                statistic=statistic,
                value=round(value, 6),
                threshold=threshold,
                alarm=bool(alarm and self.enough),
                detail=detail,
            )
        )

    def numeric(self, name: str, reference: Sequence[float], window: Sequence[float], what: str):
        c = self.config
        detail = f"mean {what}: reference {_mean(reference)}, window {_mean(window)}"
        value, bins = numeric_psi(reference, window, c.bins, with_bins=True)
        limit = psi_limit(c.psi_threshold, bins, len(reference), len(window))
        self.add(name, "psi", value, limit, value > limit, detail)
        d, p = ks(reference, window)
        alarm = d > c.ks_threshold and p < c.ks_pvalue
        self.add(name, "ks", d, c.ks_threshold, alarm, f"{detail}; p={p:.2g}")

    def categories(self, name: str, reference: Sequence[str], window: Sequence[str], order):
        c = self.config
        value = category_psi(reference, window)
        detail = f"reference {_shares(reference, order)}; window {_shares(window, order)}"
        bins = len(set(reference) | set(window))
        limit = psi_limit(c.psi_threshold, bins, len(reference), len(window))
        self.add(name, "psi", value, limit, value > limit, detail)


def _window(store: Store, feature: str, version: int, size: int) -> list[tuple[str, dict]]:
    from sqlalchemy import select

    from aiflywheel.store import PredictionLog

    with store.session() as session:
        feature_id = Store._feature_id(session, feature)
        rows = session.execute(
            select(PredictionLog.text, PredictionLog.output)
            .where(PredictionLog.feature_id == feature_id, PredictionLog.version == version)
            .order_by(PredictionLog.created_at.desc())
            .limit(size)
        ).all()
    return [(str(text), dict(output or {})) for text, output in rows]


def feature_recipe(store: Store, feature: str):
    from aiflywheel.recipe import parse_recipe

    row = store.get_feature(feature)
    if row is None:
        raise NotFoundError(
            f"unknown feature {feature!r}; run `flywheel data check` on its recipe first"
        )
    return parse_recipe(row.recipe, origin=f"feature {feature!r}'s stored recipe"), row.task


def compute_checks(
    reference,
    window_texts: Sequence[str],
    window_outputs: Sequence[dict[str, Any]],
    config,
    *,
    seed: int,
    encoder: tuple[str, Callable[[list[str]], Any]] | None = None,
) -> list[DriftCheck]:
    """Every check of ``window_*`` against ``reference`` (a ``DriftReference``)."""
    checks = _Checks(config, enough=len(window_texts) >= config.min_rows)
    ref_texts = list(reference.texts)
    checks.numeric(
        "input_length", [len(t) for t in ref_texts], [len(t) for t in window_texts], "characters"
    )
    checks.categories(
        "language_mix",
        [detect_language(t) for t in ref_texts],
        [detect_language(t) for t in window_texts],
        LANGUAGES,
    )
    vocabulary = {u for t in reference.vocabulary_texts for u in words(t)}
    ref_oov = oov_shares(reference.heldout_texts or ref_texts, vocabulary)
    checks.numeric("oov_share", ref_oov, oov_shares(window_texts, vocabulary), "OOV share")
    ref_outputs = list(reference.heldout_outputs)
    if ref_outputs and window_outputs:
        labels = [str(o.get("label", "")) for o in ref_outputs]
        checks.categories(
            "prediction",
            labels,
            [str(o.get("label", "")) for o in window_outputs],
            sorted(set(labels) | {str(o.get("label", "")) for o in window_outputs}),
        )
        ref_conf = [c for c in map(confidence_of, ref_outputs) if c is not None]
        cur_conf = [c for c in map(confidence_of, window_outputs) if c is not None]
        if ref_conf and cur_conf:
            checks.numeric("confidence", ref_conf, cur_conf, "confidence")
    rng = np.random.default_rng(seed)
    cur = list(window_texts)
    if len(cur) > MAX_EMBED_ROWS:
        cur = [cur[i] for i in rng.choice(len(cur), MAX_EMBED_ROWS, replace=False)]
    # Balanced sides: the AUC then reads the same whatever the sizes.
    ref = [
        ref_texts[i]
        for i in rng.choice(len(ref_texts), min(len(ref_texts), max(len(cur), 50)), replace=False)
    ]
    if encoder is not None:
        name, encode = encoder
        ref_emb, cur_emb = np.asarray(encode(ref)), np.asarray(encode(cur))
        how = f"the version's encoder {name}"
    else:
        ref_emb, cur_emb = tfidf_projection(ref, cur, seed)
        how = "a TF-IDF char 1-3-gram projection (SVD) fitted on the reference"
    auc = two_sample_auc(ref_emb, cur_emb, seed)
    distance = mean_cosine_distance(ref_emb, cur_emb)
    checks.add(
        "embedding",
        "auc",
        auc,
        config.embedding_auc,
        auc > config.embedding_auc,
        f"{how}; mean-embedding cosine distance {distance:.4f}",
    )
    return checks.items


def _worst(checks: Sequence[DriftCheck]) -> DriftCheck | None:
    if not checks:
        return None
    return max(checks, key=lambda c: (c.alarm, c.value / c.threshold if c.threshold else 0.0))


def drift_report(
    feature: str,
    *,
    store: Store,
    settings,
    window: int | None = None,
    save: bool = True,
) -> DriftReport:
    """Compare the newest ``window`` predictions of ``feature``'s champion (default: the
    recipe's ``monitor.drift.window``, 500) with its training data; store the report
    (``save``) and return it with the feature's history."""
    from aiflywheel.core.registry import get_task
    from aiflywheel.monitoring.records import report_history, save_report
    from aiflywheel.store import utcnow

    if window is not None and (isinstance(window, bool) or window < 1):
        raise DataError(f"window must be a positive number of predictions, got {window!r}")
    recipe, task_name = feature_recipe(store, feature)
    config = recipe.monitor.drift
    champion = store.champion(feature)
    if champion is None:
        raise NotFoundError(
            f"feature {feature!r} has no champion: drift compares the serving version's "
            "traffic with its training data; promote a version first"
        )
    task = get_task(task_name)
    rows = _window(store, feature, champion.version, window or config.window)
    reference = task.drift_reference(
        champion.model_path,
        feature=feature,
        store=store,
        limit=config.reference_rows,
        seed=recipe.seed,
    )
    checks: list[DriftCheck] = []
    if rows and reference.texts:
        encoder = task.drift_encoder(champion.model_path, settings=settings)
        checks = compute_checks(
            reference,
            [text for text, _ in rows],
            [output for _, output in rows],
            config,
            seed=recipe.seed,
            encoder=encoder,
        )
    worst = _worst(checks)
    now = utcnow()
    report = DriftReport(
        feature=feature,
        version=champion.version,
        window_rows=len(rows),
        reference_rows=len(reference.texts),
        computed_at=now.isoformat(timespec="seconds"),
        alarm=any(c.alarm for c in checks),
        checks=checks,
        history=[],
    )
    if save:
        save_report(
            store,
            feature,
            version=report.version,
            window_rows=report.window_rows,
            reference_rows=report.reference_rows,
            alarm=report.alarm,
            worst_check=f"{worst.name}/{worst.statistic}" if worst else None,
            worst_value=worst.value if worst else None,
            checks=[c.model_dump(mode="json") for c in checks],
            computed_at=now,
        )
    report.history = [
        DriftHistoryPoint(
            computed_at=_iso(row.computed_at),
            alarm=row.alarm,
            worst_check=row.worst_check,
            worst_value=row.worst_value,
        )
        for row in report_history(store, feature, HISTORY)
    ]
    return report


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


__all__ = [
    "DriftCheck",
    "DriftHistoryPoint",
    "DriftReport",
    "category_psi",
    "compute_checks",
    "confidence_of",
    "drift_report",
    "ks",
    "numeric_psi",
    "oov_shares",
    "psi",
    "two_sample_auc",
]
