"""The assistants a server answers with (features of task ``assistant``).

Each is a ``LoadedAssistant`` (index, encoder, generator); the champion version is loaded
at start and swapped in when the store's champion changes, like classifiers. Answers run
on worker threads; a local LLM generator answers one request at a time (two generations
at once on a small CPU only make both slower).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiflywheel.errors import NotFoundError
from aiflywheel.store import Store

log = logging.getLogger("aiflywheel.serve")


def assistant_features(store: Store, names: Sequence[str]) -> set[str]:
    """Which of ``names`` are conversational features (answered through chat)."""
    from aiflywheel.core.registry import get_task

    found = set()
    for name in names:
        feature = store.get_feature(name)
        if feature is not None and get_task(feature.task).conversational:
            found.add(name)
    return found


@dataclass
class HostedAssistant:
    loaded: object  # aiflywheel.tasks.assistant.service.LoadedAssistant
    serial: threading.Lock = field(default_factory=threading.Lock)

    @property
    def version(self) -> int:
        return self.loaded.version  # type: ignore[attr-defined]

    @property
    def exclusive(self) -> bool:
        """Whether answers must not run in parallel (a local LLM)."""
        return self.loaded.config.generator.kind == "local"  # type: ignore[attr-defined]


class AssistantHost:
    """Loaded assistants by feature name."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._hosted: dict[str, HostedAssistant] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._hosted)

    def versions(self) -> dict[str, int]:
        return {name: hosted.version for name, hosted in sorted(self._hosted.items())}

    def get(self, feature: str) -> HostedAssistant:
        hosted = self._hosted.get(feature)
        if hosted is None:
            served = ", ".join(self.names) or "none"
            raise NotFoundError(
                f"model {feature!r} is not an assistant served here; assistants: {served}"
            )
        return hosted

    def __contains__(self, feature: str) -> bool:
        return feature in self._hosted

    async def sync_live_entries(self) -> None:
        """Add entries added live elsewhere (``flywheel kb add``) to the served indexes."""
        from aiflywheel.tasks.assistant.service import live_entry_chunks, put_live_chunks

        for feature, hosted in list(self._hosted.items()):
            index = hosted.loaded.assistant.index  # type: ignore[attr-defined]

            def sync(feature: str = feature, index=index) -> None:
                have = {c.id for c in index.chunks}
                missing = [c for c in live_entry_chunks(self.store, feature) if c.id not in have]
                if missing:
                    put_live_chunks(index, missing)
                    log.info("%s: %d live knowledge-base entries added", feature, len(missing))

            await asyncio.to_thread(sync)

    async def switch(self, feature: str, version: int) -> HostedAssistant:
        """Serve ``feature`` v``version`` (loaded and warmed before it replaces the old)."""
        from aiflywheel.tasks.assistant.service import load_assistant

        lock = self._locks.setdefault(feature, asyncio.Lock())
        async with lock:
            current = self._hosted.get(feature)
            if current is not None and current.version == version:
                return current
            row = await asyncio.to_thread(self.store.get_model_version, feature, version)

            def load():
                loaded = load_assistant(
                    row.model_path, feature=feature, version=row.version, store=self.store
                )
                loaded.warm()
                return loaded

            loaded = await asyncio.to_thread(load)
            hosted = HostedAssistant(loaded)
            self._hosted[feature] = hosted
            log.info(
                "%s: assistant v%d serving (was v%s)",
                feature,
                version,
                current.version if current else "-",
            )
            return hosted


__all__ = ["AssistantHost", "HostedAssistant", "assistant_features"]
