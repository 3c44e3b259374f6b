"""What this process serves: one loaded model per feature, swapped atomically.

A background task polls ``Store.champion_versions()``; when a feature's champion
changes, the new version is loaded and warmed on a worker thread and only then put in
place (one dict assignment), so a request is always answered by a fully loaded model.
The old model finishes the requests already queued for it and is then closed.
A classifier without a champion is not served from a candidate: classify answers 409
naming the candidates until one is promoted (the poller then loads it), unless the
server runs with ``--serve-candidates``, which serves the newest candidate.
Shadow versions (``--shadow FEATURE:VERSION``) score the champion's processed texts in
the background, from a bounded queue that drops (and counts) when full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiflywheel.data.clean import training_view
from aiflywheel.errors import (
    ConflictError,
    DataError,
    FlywheelError,
    ModelError,
    NotFoundError,
    StoreError,
)
from aiflywheel.recipe import CleanConfig, PiiConfig
from aiflywheel.serve.assistants import AssistantHost, assistant_features
from aiflywheel.serve.batching import MicroBatcher
from aiflywheel.serve.config import ServeConfig
from aiflywheel.serve.metrics import ServeMetrics
from aiflywheel.serve.prediction_log import PredictionWriter
from aiflywheel.store import Store

log = logging.getLogger("aiflywheel.serve")


@dataclass
class ServedModel:
    """A loaded model version with the recipe's text preparation and its batcher."""

    feature: str
    version: int
    status: str
    task: str
    labels: list[str]
    clean: CleanConfig
    pii: PiiConfig
    classifier: Any = field(repr=False)
    batcher: MicroBatcher | None = field(default=None, repr=False)

    def prepare(self, text: str) -> str:
        """The text as training saw it: cleaned, then PII redacted (drop_row redacts too)."""
        return training_view(text, self.clean, self.pii)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.classifier.predict_proba(list(texts)))

    async def score(self, texts: list[str]) -> np.ndarray:
        """Probability rows (columns in ``labels`` order) through the micro-batcher."""
        assert self.batcher is not None
        return await self.batcher.submit(texts)


def as_probabilities(labels: Sequence[str], row: np.ndarray) -> dict[str, float]:
    """``{label: probability}`` rounded like ``Prediction`` does."""
    return {name: round(float(p), 6) for name, p in zip(labels, row, strict=True)}


def load_served_model(store: Store, feature: str, version: int | None) -> ServedModel:
    """Load and warm a version (blocking; run it on a worker thread)."""
    from aiflywheel.core.registry import get_task
    from aiflywheel.core.versions import load, task_of

    row = store.get_model_version(feature, version)
    loaded = load(feature, row.version, store=store)
    recipe = row.recipe or {}
    model = ServedModel(
        feature=feature,
        version=row.version,
        status=row.status,
        task=task_of(row),
        labels=list(loaded.labels),
        clean=CleanConfig.model_validate(recipe.get("clean") or {}),
        pii=PiiConfig.model_validate(recipe.get("pii") or {}),
        classifier=loaded.classifier,
    )
    get_task(model.task).warm_up(model)
    return model


def features_to_serve(store: Store, wanted: Sequence[str]) -> dict[str, int]:
    """``{feature: version}``: the named features, or every feature with a model version."""
    names = list(dict.fromkeys(wanted)) or [f.name for f in store.list_features()]
    found: dict[str, int] = {}
    for name in names:
        try:
            found[name] = store.get_model_version(name).version
        except NotFoundError:
            if wanted:
                raise
    if not found:
        raise NotFoundError(
            "no feature has a model version to serve; run `flywheel train RECIPE` first"
        )
    return found


@dataclass
class ServingPlan:
    """What a server loads at start, and the classifiers that wait for a champion."""

    versions: dict[str, int]
    waiting: list[str]
    assistants: set[str]


def serving_plan(store: Store, config: ServeConfig) -> ServingPlan:
    """Each feature's champion; a classifier without one waits (or, with
    ``serve_candidates``, serves its newest candidate). Assistants serve their newest
    version as before."""
    found = features_to_serve(store, config.features)
    assistants = assistant_features(store, list(found))
    champions = store.champion_versions()
    waiting = [
        name
        for name in found
        if name not in champions and name not in assistants and not config.serve_candidates
    ]
    versions = {name: version for name, version in found.items() if name not in waiting}
    return ServingPlan(versions=versions, waiting=waiting, assistants=assistants)


def no_champion_message(store: Store, feature: str) -> str:
    """Why ``feature`` is not answered, and the command that fixes it."""
    candidates = [
        row.version for row, _ in store.list_model_versions(feature) if row.status == "candidate"
    ]
    named = ", ".join(f"v{v}" for v in candidates) or "none"
    newest = candidates[-1] if candidates else 1
    return (
        f"feature {feature!r} has no champion; candidates: {named} \u2014 promote one with "
        f"`flywheel promote {feature}:{newest}` (or start the server with --serve-candidates)"
    )


class ShadowScorer:
    """Scores the champion's processed texts with another version, off the request path."""

    def __init__(
        self,
        model: ServedModel,
        *,
        queue_size: int,
        max_batch: int,
        writer: PredictionWriter,
        metrics: ServeMetrics,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.writer = writer
        self.metrics = metrics
        self._queue: asyncio.Queue[tuple[list[str], list[str], list[str]] | None] = asyncio.Queue(
            maxsize=queue_size
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, ids: list[str], texts: list[str], labels: list[str]) -> None:
        """Queue texts for shadow scoring; drop (and count) when the queue is full."""
        try:
            self._queue.put_nowait((ids, texts, labels))
        except asyncio.QueueFull:
            self.metrics.shadow_dropped.labels(self.model.feature).inc(len(texts))

    async def close(self) -> None:
        """Score what is queued, then stop."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        if self.model.batcher is not None:
            await self.model.batcher.close()

    async def _run(self) -> None:
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is None:
                break
            items = [item]
            size = len(item[1])
            while size < self.max_batch and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stop = True
                    break
                items.append(more)
                size += len(more[1])
            await self._score(items)

    async def _score(self, items: list[tuple[list[str], list[str], list[str]]]) -> None:
        ids = [i for item in items for i in item[0]]
        texts = [t for item in items for t in item[1]]
        labels = [label for item in items for label in item[2]]
        try:
            proba = await self.model.score(texts)
        except Exception:
            log.exception("shadow %s v%d failed", self.model.feature, self.model.version)
            return
        names = self.model.labels
        rows = []
        for pid, row, champion_label in zip(ids, proba, labels, strict=True):
            label = names[int(row.argmax())]
            rows.append(
                {
                    "prediction_id": pid,
                    "feature": self.model.feature,
                    "version": self.model.version,
                    "label": label,
                    "probabilities": as_probabilities(names, row),
                    "agrees": label == champion_label,
                }
            )
        if self.writer.submit_shadow(rows):
            self.metrics.shadow_scored.labels(self.model.feature, str(self.model.version)).inc(
                len(rows)
            )
        else:
            self.metrics.shadow_dropped.labels(self.model.feature).inc(len(rows))


class ServingModels:
    """The models this process answers with, kept in step with the store's champions."""

    def __init__(
        self, store: Store, config: ServeConfig, metrics: ServeMetrics, writer: PredictionWriter
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.writer = writer
        self._models: dict[str, ServedModel] = {}
        self._waiting: set[str] = set()  # classifiers without a champion (409 until one)
        self.shadows: dict[str, ShadowScorer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._poller: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self.ready = False
        self.reload_error: str | None = None
        self.assistants = AssistantHost(store)

    # -- reading --------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self) -> dict[str, int]:
        """Serving version of every feature, classifiers and assistants."""
        found = {name: model.version for name, model in self._models.items()}
        return dict(sorted({**found, **self.assistants.versions()}.items()))

    def get(self, feature: str | None) -> ServedModel:
        """The model answering for ``feature`` (optional when one feature is served).

        A feature waiting for its first champion raises ``ConflictError`` (without the
        candidates: :meth:`answering` names them).
        """
        served = ", ".join(sorted({*self._models, *self._waiting})) or "none"
        if feature is None:
            if len(self._models) == 1 and not self._waiting:
                return next(iter(self._models.values()))
            if not self._models and len(self._waiting) == 1:
                feature = next(iter(self._waiting))
            else:
                raise DataError(f"feature: required when several features are served ({served})")
        model = self._models.get(feature)
        if model is None:
            if feature in self._waiting:
                raise ConflictError(f"feature {feature!r} has no champion")
            raise NotFoundError(f"feature {feature!r} is not served here; served: {served}")
        return model

    async def answering(self, feature: str | None) -> ServedModel:
        """:meth:`get`, naming the candidates (from the store) when there is no champion."""
        try:
            return self.get(feature)
        except ConflictError:
            name = feature if feature is not None else next(iter(self._waiting))
            message = await asyncio.to_thread(no_champion_message, self.store, name)
            raise ConflictError(message) from None

    def is_served(self, feature: str) -> bool:
        return feature in self._models or feature in self._waiting

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        """Load every served feature and shadow, then start polling for new champions."""
        plan = await asyncio.to_thread(serving_plan, self.store, self.config)
        self._waiting = set(plan.waiting)
        for feature, version in plan.versions.items():
            if feature in plan.assistants:
                await self.assistants.switch(feature, version)
            else:
                await self._install(await self._load(feature, version))
        for feature, version in self.config.shadows:
            if feature in self._waiting:
                raise ConflictError(
                    f"--shadow {feature}:{version}: feature {feature!r} has no champion to "
                    "shadow; promote one first or pass --serve-candidates"
                )
            if feature not in self._models:
                raise NotFoundError(
                    f"--shadow {feature}:{version}: feature {feature!r} is not served; "
                    f"served: {', '.join(self.names)}"
                )
            model = await self._load(feature, version)
            scorer = ShadowScorer(
                model,
                queue_size=self.config.shadow_queue,
                max_batch=self.config.max_batch,
                writer=self.writer,
                metrics=self.metrics,
            )
            scorer.start()
            self.shadows[feature] = scorer
        self.ready = True
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        """Stop polling, finish queued requests and shadow work, stop the model threads."""
        self.ready = False
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for scorer in self.shadows.values():
            await scorer.close()
        for model in self._models.values():
            if model.batcher is not None:
                await model.batcher.close()
        if self._retiring:
            await asyncio.gather(*self._retiring)

    async def refresh(self, feature: str) -> ServedModel | None:
        """Serve the store's champion of ``feature`` now (no-op when it already does)."""
        champion = await asyncio.to_thread(self.store.champion, feature)
        if champion is None:
            return self._models.get(feature)
        if feature in self.assistants:
            await self.assistants.switch(feature, champion.version)
            return None
        return await self._switch(feature, champion.version)

    # -- internals ------------------------------------------------------------------
    async def _load(self, feature: str, version: int | None) -> ServedModel:
        model = await asyncio.to_thread(load_served_model, self.store, feature, version)

        def on_batch(size: int, requests: int) -> None:
            self.metrics.batch_size.labels(feature).observe(size)
            self.metrics.batch_requests.labels(feature).observe(requests)

        model.batcher = MicroBatcher(
            model.predict_proba,
            max_batch=self.config.max_batch,
            max_wait_ms=self.config.max_wait_ms,
            name=f"{feature}-v{model.version}",
            on_batch=on_batch,
        )
        model.batcher.start()
        return model

    async def _install(self, model: ServedModel) -> None:
        old = self._models.get(model.feature)
        self._models[model.feature] = model  # the swap: one reference assignment
        self._waiting.discard(model.feature)
        self.metrics.serving_version.labels(model.feature).set(model.version)
        if old is not None and old.batcher is not None:
            task = asyncio.get_running_loop().create_task(old.batcher.close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _switch(self, feature: str, version: int) -> ServedModel:
        lock = self._locks.setdefault(feature, asyncio.Lock())
        async with lock:
            current = self._models.get(feature)
            if current is not None and current.version == version:
                return current
            try:
                model = await self._load(feature, version)
            except Exception as exc:
                self.metrics.reloads.labels(feature, "failed").inc()
                raise ModelError(
                    f"{feature} v{version} could not be loaded; still serving "
                    f"v{current.version if current else '-'}: {exc}"
                ) from exc
            await self._install(model)
            self.metrics.reloads.labels(feature, "swapped").inc()
            log.info(
                "%s: now serving v%d (was v%s)",
                feature,
                version,
                current.version if current else "-",
            )
            return model

    def _wants(self, feature: str) -> bool:
        return not self.config.features or feature in self.config.features

    async def _poll(self) -> None:
        last_errors: dict[str, str] = {}
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                champions = await asyncio.to_thread(self.store.champion_versions)
            except StoreError as exc:
                if self.reload_error != str(exc):
                    log.warning("cannot check for new champions: %s", exc)
                self.reload_error = str(exc)
                continue
            self.reload_error = None
            try:
                await self.assistants.sync_live_entries()
            except Exception:
                log.exception("syncing live knowledge-base entries failed")
            for feature, version in sorted(champions.items()):
                if feature in self.assistants:
                    if self.assistants.get(feature).version == version:
                        continue
                    try:
                        await self.assistants.switch(feature, version)
                    except Exception:
                        log.exception("reloading assistant %s v%d failed", feature, version)
                    continue
                current = self._models.get(feature)
                if not self._wants(feature) or (current and current.version == version):
                    continue
                new = not self.config.features and feature not in self._models
                if new and await asyncio.to_thread(assistant_features, self.store, [feature]):
                    await self.assistants.switch(feature, version)
                    continue
                try:
                    await self._switch(feature, version)
                    last_errors.pop(feature, None)
                except FlywheelError as exc:
                    if last_errors.get(feature) != str(exc):
                        log.error("%s", exc)
                    last_errors[feature] = str(exc)
                except Exception:
                    log.exception("reloading %s v%d failed", feature, version)
