"""A knowledge index on disk: chunks, their embeddings and BM25, updated incrementally.

Layout of an index folder::

    manifest.json          encoder name and dim, counts, versions, current generation
    gen-000003/
        chunks.jsonl       one chunk per line; line i is row i of the arrays below
        embeddings.npy     float32 (chunks, dim), unit rows
        bm25.npz           BM25 term counts (scipy sparse, no pickles)
        bm25.json          BM25 parameters and vocabulary

Every write puts a complete new generation folder in place (written under a temporary
name, then renamed) and only then replaces ``manifest.json`` atomically, so a crash at
any point leaves the previous index readable; the previous generation is kept for
readers that opened it just before the switch, older ones are deleted.

``KnowledgeIndex.update`` compares chunk ids (a hash of all of a chunk's fields, see
``chunking.chunk_id``) and embeds only chunks it has not seen; with a different encoder
than the one the index was built with, it re-embeds everything and says so. Chunks
added at runtime (``add_chunks``, e.g. ``flywheel kb add``) take effect at once, are
persisted, and survive later updates from the knowledge-base files. One process
writes an index at a time; any number may read it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiflywheel.errors import DataError, ModelError, NotFoundError
from aiflywheel.files import write_json_atomic
from aiflywheel.tasks.assistant.bm25 import TOKENIZER_VERSION, Bm25Index, bm25_tokens
from aiflywheel.tasks.assistant.encoders import TextEncoder
from aiflywheel.tasks.assistant.knowledge_base import KnowledgeBase
from aiflywheel.tasks.assistant.retrieval import FusionSettings, HybridRetriever, index_text
from aiflywheel.tasks.assistant.types import Chunk, RetrievalHit

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EMBED_BATCH = 64

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexUpdate:
    """What an update changed: chunks embedded and added, removed, kept as they were."""

    added: int
    removed: int
    unchanged: int
    rebuilt: bool = False
    note: str = ""

    def summary(self) -> str:
        line = f"{self.added} added, {self.removed} removed, {self.unchanged} unchanged"
        return f"{line} ({self.note})" if self.note else line


def _versions() -> dict[str, str]:
    found = {}
    for package in ("aiflywheel", "numpy", "scipy", "jieba"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _embed(encoder: TextEncoder, chunks: Sequence[Chunk], progress: Progress | None) -> np.ndarray:
    """Passage vectors of ``chunks`` (float32, unit rows), in batches."""
    out = np.zeros((len(chunks), encoder.dim), dtype=np.float32)
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = [index_text(c) for c in chunks[start : start + EMBED_BATCH]]
        out[start : start + len(batch)] = encoder.encode_passages(batch)
        if progress is not None:
            progress(start + len(batch), len(chunks))
    return out


def _unique(chunks: Iterable[Chunk]) -> list[Chunk]:
    seen: dict[str, Chunk] = {}
    for chunk in chunks:
        seen.setdefault(chunk.id, chunk)
    return list(seen.values())


def _chunk_from_json(raw: dict, where: str) -> Chunk:
    try:
        return Chunk(**raw)
    except TypeError as exc:
        raise DataError(f"{where}: not a chunk ({exc})") from None


@dataclass(frozen=True)
class _State:
    """One consistent version of the index: row i of ``embeddings`` and BM25 document i
    belong to ``chunks[i]``."""

    chunks: list[Chunk]
    embeddings: np.ndarray
    bm25: Bm25Index
    encoder_name: str
    runtime_ids: frozenset[str]


class KnowledgeIndex:
    """Chunks, embeddings and BM25 of a knowledge base, persisted in ``directory``.

    Create with ``KnowledgeIndex.build`` or open with ``KnowledgeIndex.load``; search
    through ``retriever()`` (or ``search``). A change builds a new state, writes it,
    and only then swaps it in (under a lock), so a failed write leaves both the files
    and the object as they were, and searches running meanwhile see the old state.
    """

    def __init__(
        self,
        directory: Path,
        state: _State,
        encoder: TextEncoder | None,
        *,
        generation: int,
        fusion: FusionSettings | None = None,
    ) -> None:
        """Hold an already built state; use ``build`` or ``load``."""
        self.directory = Path(directory)
        self._state = state
        self.encoder = encoder
        self.generation = generation
        self.fusion = fusion or FusionSettings()
        self._lock = threading.Lock()
        self._retriever: HybridRetriever | None = None

    # ------------------------------------------------------------ reading

    @property
    def chunks(self) -> list[Chunk]:
        return list(self._state.chunks)

    @property
    def embeddings(self) -> np.ndarray:
        return self._state.embeddings

    @property
    def encoder_name(self) -> str:
        """The encoder the stored embeddings come from."""
        return self._state.encoder_name

    @property
    def runtime_ids(self) -> frozenset[str]:
        """Ids of chunks added at runtime (kept by ``update``)."""
        return self._state.runtime_ids

    def __len__(self) -> int:
        return len(self._state.chunks)

    def chunk(self, chunk_id: str) -> Chunk:
        """The chunk with this id; ``NotFoundError`` otherwise."""
        for chunk in self._state.chunks:
            if chunk.id == chunk_id:
                return chunk
        raise NotFoundError(f"no chunk with id {chunk_id!r} in the index at {self.directory}")

    @property
    def encoder_matches(self) -> bool:
        """Whether the stored embeddings come from the encoder this index was opened with."""
        return self.encoder is not None and self.encoder.name == self.encoder_name

    def retriever(self) -> HybridRetriever:
        """A retriever over the current chunks (BM25 only when opened without an encoder).

        ``ModelError`` when the index was embedded with another encoder: run ``update``.
        """
        if self.encoder is not None and not self.encoder_matches:
            raise ModelError(
                f"the index at {self.directory} was embedded with {self.encoder_name!r}, not "
                f"{self.encoder.name!r}; update it to re-embed with the new encoder"
            )
        current = self._retriever
        if current is None:
            state = self._state
            current = HybridRetriever(
                state.chunks,
                state.bm25,
                state.embeddings if self.encoder is not None else None,
                self.encoder,
                **self.fusion.options(),
            )
            self._retriever = current
        return current

    def search(self, query: str, k: int = 5, **options) -> list[RetrievalHit]:
        """``retriever().search(query, k, **options)``."""
        return self.retriever().search(query, k, **options)

    # ------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        kb: KnowledgeBase | Sequence[Chunk],
        encoder: TextEncoder,
        directory: Path,
        *,
        progress: Progress | None = None,
        fusion: FusionSettings | None = None,
    ) -> KnowledgeIndex:
        """Embed and index every chunk of ``kb`` and write the index into ``directory``
        (replacing an index already there)."""
        chunks = _unique(kb.chunks if isinstance(kb, KnowledgeBase) else kb)
        return cls.from_parts(
            chunks,
            _embed(encoder, chunks, progress),
            Bm25Index.build([bm25_tokens(index_text(c)) for c in chunks]),
            encoder,
            directory,
            fusion=fusion,
        )

    @classmethod
    def from_parts(
        cls,
        chunks: Sequence[Chunk],
        embeddings: np.ndarray,
        bm25: Bm25Index,
        encoder: TextEncoder,
        directory: Path,
        *,
        fusion: FusionSettings | None = None,
    ) -> KnowledgeIndex:
        """Write an index from parts computed elsewhere (row i of ``embeddings`` and BM25
        document i belong to ``chunks[i]``), e.g. embeddings computed on another machine."""
        chunks = list(chunks)
        if not (len(chunks) == embeddings.shape[0] == len(bm25)):
            raise DataError(
                f"index parts disagree: {len(chunks)} chunks, {embeddings.shape[0]} "
                f"embeddings, {len(bm25)} BM25 documents"
            )
        if len({c.id for c in chunks}) != len(chunks):
            raise DataError("index parts hold the same chunk id twice; ids must be unique")
        state = _State(
            chunks=chunks,
            embeddings=np.asarray(embeddings, dtype=np.float32),
            bm25=bm25,
            encoder_name=encoder.name,
            runtime_ids=frozenset(),
        )
        directory = Path(directory)
        previous = int(_read_manifest(directory)["generation"]) if _has_index(directory) else 0
        index = cls(directory, state, encoder, generation=previous, fusion=fusion)
        index._commit(state)
        return index

    @classmethod
    def load(
        cls,
        directory: Path,
        encoder: TextEncoder | None = None,
        *,
        fusion: FusionSettings | None = None,
    ) -> KnowledgeIndex:
        """Open the index in ``directory``; ``encoder`` may be ``None`` for BM25 only.

        ``NotFoundError`` when there is no index there, ``DataError`` when its files do
        not agree with each other.
        """
        directory = Path(directory)
        if not _has_index(directory):
            raise NotFoundError(
                f"no knowledge index in {directory} ({MANIFEST} is missing); build one first"
            )
        manifest = _read_manifest(directory)
        if manifest.get("format") != FORMAT_VERSION:
            raise DataError(
                f"knowledge index {directory} has format {manifest.get('format')!r}, "
                f"expected {FORMAT_VERSION}; build it again"
            )
        folder = directory / _generation_name(int(manifest["generation"]))
        try:
            # split at \n only: chunk text may hold U+2028 and the like unescaped
            lines = (folder / "chunks.jsonl").read_text(encoding="utf-8").split("\n")
            chunks = [
                _chunk_from_json(json.loads(line), f"{folder / 'chunks.jsonl'} line {n}")
                for n, line in enumerate(lines, start=1)
                if line.strip()
            ]
            embeddings = np.load(folder / "embeddings.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the knowledge index in {folder}: {exc}") from None
        bm25 = Bm25Index.load(folder)
        if bm25.tokenizer_version != TOKENIZER_VERSION:
            bm25 = Bm25Index.build(
                [bm25_tokens(index_text(c)) for c in chunks], k1=bm25.k1, b=bm25.b
            )
        sizes = {"chunks": len(chunks), "embeddings": embeddings.shape[0], "bm25": len(bm25)}
        if len(set(sizes.values())) != 1 or sizes["chunks"] != manifest["chunks"]:
            raise DataError(
                f"knowledge index {folder} is inconsistent: {sizes}, manifest says "
                f"{manifest['chunks']} chunks"
            )
        state = _State(
            chunks=chunks,
            embeddings=embeddings.astype(np.float32, copy=False),
            bm25=bm25,
            encoder_name=str(manifest["encoder"]),
            runtime_ids=frozenset(manifest.get("runtime_chunks", [])),
        )
        return cls(directory, state, encoder, generation=int(manifest["generation"]), fusion=fusion)

    # ------------------------------------------------------------ changing

    def _require_encoder(self) -> TextEncoder:
        if self.encoder is None:
            raise ModelError(
                f"changing the index at {self.directory} needs an encoder; open it with one"
            )
        return self.encoder

    def update(
        self, kb: KnowledgeBase, *, keep_runtime: bool = True, progress: Progress | None = None
    ) -> IndexUpdate:
        """Make the index hold ``kb``'s chunks (plus runtime-added ones when
        ``keep_runtime``), embedding only chunks it has not seen, and persist it.

        With another encoder than the index was built with, every chunk is re-embedded
        and the returned ``IndexUpdate`` says so (``rebuilt``, ``note``).
        """
        encoder = self._require_encoder()
        with self._lock:
            old = self._state
            wanted = _unique(kb.chunks)
            wanted_ids = {c.id for c in wanted}
            runtime = [c for c in old.chunks if c.id in old.runtime_ids and c.id not in wanted_ids]
            if keep_runtime:
                wanted += runtime
            runtime_ids = frozenset(c.id for c in runtime) if keep_runtime else frozenset()
            if not self.encoder_matches:
                state = _State(
                    chunks=wanted,
                    embeddings=_embed(encoder, wanted, progress),
                    bm25=Bm25Index.build(
                        [bm25_tokens(index_text(c)) for c in wanted], k1=old.bm25.k1, b=old.bm25.b
                    ),
                    encoder_name=encoder.name,
                    runtime_ids=runtime_ids,
                )
                self._commit(state)
                note = (
                    f"encoder changed from {old.encoder_name!r} to {encoder.name!r}: "
                    f"re-embedded all {len(wanted)} chunks"
                )
                return IndexUpdate(len(wanted), len(old.chunks), 0, rebuilt=True, note=note)
            keep = {c.id for c in wanted}
            drop = [i for i, c in enumerate(old.chunks) if c.id not in keep]
            have = {c.id for c in old.chunks}
            new = [c for c in wanted if c.id not in have]
            if drop or new or runtime_ids != old.runtime_ids:
                self._commit(self._changed(old, drop, new, runtime_ids, progress))
            return IndexUpdate(len(new), len(drop), len(old.chunks) - len(drop))

    def add_chunks(self, chunks: Sequence[Chunk]) -> IndexUpdate:
        """Add chunks at runtime (e.g. a FAQ entry from ``faq_entry_chunk``): searchable
        at once, persisted, and kept by later ``update`` calls. Known ids are skipped."""
        self._require_encoder()
        self.retriever()  # raises when the stored embeddings come from another encoder
        with self._lock:
            old = self._state
            have = {c.id for c in old.chunks}
            new = [c for c in _unique(chunks) if c.id not in have]
            if new:
                runtime_ids = old.runtime_ids | {c.id for c in new}
                self._commit(self._changed(old, [], new, runtime_ids, None))
            return IndexUpdate(len(new), 0, len(old.chunks))

    def remove_chunks(self, chunk_ids: Iterable[str]) -> IndexUpdate:
        """Remove chunks by id (e.g. a runtime-added entry) and persist the index."""
        ids = set(chunk_ids)
        with self._lock:
            old = self._state
            drop = [i for i, c in enumerate(old.chunks) if c.id in ids]
            if drop:
                self._commit(self._changed(old, drop, [], old.runtime_ids - ids, None))
            return IndexUpdate(0, len(drop), len(old.chunks) - len(drop))

    def _changed(
        self,
        old: _State,
        drop: list[int],
        new: list[Chunk],
        runtime_ids: frozenset[str],
        progress: Progress | None,
    ) -> _State:
        """A new state: ``old`` without rows ``drop``, with ``new`` chunks (embedded now)
        appended. ``old`` is not modified."""
        vectors = _embed(self._require_encoder(), new, progress) if new else None
        mask = np.ones(len(old.chunks), dtype=bool)
        mask[drop] = False
        chunks = [c for c, kept in zip(old.chunks, mask, strict=True) if kept]
        embeddings = old.embeddings[mask]
        bm25 = old.bm25.copy()
        if drop:
            bm25.remove(drop)
        if new:
            bm25.add([bm25_tokens(index_text(c)) for c in new])
            chunks += new
            embeddings = np.vstack([embeddings, vectors]).astype(np.float32, copy=False)
        return _State(chunks, embeddings, bm25, old.encoder_name, frozenset(runtime_ids))

    def _commit(self, state: _State) -> None:
        """Persist ``state``, then make it current with a fresh retriever (keeping the
        cached query vectors)."""
        self._write(state)
        old = self._retriever
        self._state = state
        self._retriever = None
        if old is not None and self.encoder_matches:
            self.retriever().adopt_query_cache(old)

    # ------------------------------------------------------------ writing

    def _write(self, state: _State) -> None:
        """Write a new generation folder, then switch the manifest to it."""
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        generation = self.generation + 1
        while (directory / _generation_name(generation)).exists():
            generation += 1
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-gen-", dir=directory))
        try:
            lines = "".join(
                json.dumps(dataclasses.asdict(c), ensure_ascii=False) + "\n" for c in state.chunks
            )
            (tmp / "chunks.jsonl").write_text(lines, encoding="utf-8")
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(state.embeddings, dtype=np.float32))
            (tmp / "embeddings.npy").write_bytes(buffer.getvalue())
            counts, meta = state.bm25.to_bytes()
            (tmp / "bm25.npz").write_bytes(counts)
            (tmp / "bm25.json").write_text(meta, encoding="utf-8")
            for path in tmp.iterdir():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            os.rename(tmp, directory / _generation_name(generation))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        faq = sum(1 for c in state.chunks if c.kind == "faq")
        manifest = {
            "format": FORMAT_VERSION,
            "generation": generation,
            "encoder": state.encoder_name,
            "dim": int(state.embeddings.shape[1]) if state.embeddings.ndim == 2 else 0,
            "chunks": len(state.chunks),
            "faq_chunks": faq,
            "doc_chunks": len(state.chunks) - faq,
            "runtime_chunks": sorted(state.runtime_ids),
            "bm25": {
                "k1": state.bm25.k1,
                "b": state.bm25.b,
                "tokenizer_version": TOKENIZER_VERSION,
                "terms": len(state.bm25.vocabulary),
            },
            "versions": _versions(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(directory / MANIFEST, manifest)
        previous, self.generation = self.generation, generation
        _prune(directory, keep={generation, previous})


def _generation_name(generation: int) -> str:
    return f"gen-{generation:06d}"


def _has_index(directory: Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def _read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _prune(directory: Path, *, keep: set[int]) -> None:
    """Delete generation folders other than ``keep`` (the current one and the one
    before it) and temporary folders left by a crash more than an hour ago."""
    for path in directory.iterdir():
        if path.name.startswith("gen-") and path.is_dir():
            try:
                number = int(path.name[4:])
            except ValueError:
                continue
            if number not in keep:
                shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".tmp-gen-") and time.time() - path.stat().st_mtime > 3600:
            shutil.rmtree(path, ignore_errors=True)
