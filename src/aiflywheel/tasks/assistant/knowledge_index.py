"""A knowledge index on disk: chunks, their embeddings and BM25, updated incrementally.

Layout of an index folder::

    manifest.json          encoder name and dim, counts, versions, the segments in order,
                           the rows deleted from each
    gen-000003/            the base segment (written whole)
        chunks.jsonl       one chunk per line; line i is row i of the arrays below
        embeddings.npy     float32 (chunks, dim), unit rows
        bm25.npz           BM25 term counts (scipy sparse, no pickles)
        bm25.json          BM25 parameters and the segment's vocabulary
        vectors.faiss      the IVF vector index over the base rows (large indexes only)
        vectors-labels.npy its label -> base row map (-1: removed)
    gen-000004/            a later segment: only the chunks added by one change

Small changes are append-only: adding chunks writes one new segment folder with just
those chunks, removing chunks records their rows in the manifest (``deleted``), and
the vector index takes the new vectors in memory (and on the next load) instead of
being rebuilt. Adding one FAQ entry to a 100,000-chunk index therefore writes a few KB and
the manifest, not the whole index. A change is written whole (a new base segment)
when it re-embeds everything, when ``update`` changes the knowledge-base files, or
once there are more than ``MAX_SEGMENTS`` segments or a tenth of the rows are deleted.

Every write puts a complete new folder in place (written under a temporary name, then
renamed) and only then replaces ``manifest.json`` atomically, so a crash at any point
leaves the previous index readable; the folders of the previous manifest are kept for
readers that opened it just before the switch, older ones are deleted.

Dense search is exact below ``vector_search.ANN_MIN_CHUNKS`` chunks or without
faiss installed (the ``ann`` extra), and scans the nearest lists of an IVF index above.

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
from aiflywheel.tasks.assistant import vector_search
from aiflywheel.tasks.assistant.bm25 import TOKENIZER_VERSION, Bm25Index, bm25_tokens
from aiflywheel.tasks.assistant.encoders import TextEncoder
from aiflywheel.tasks.assistant.knowledge_base import KnowledgeBase
from aiflywheel.tasks.assistant.retrieval import FusionSettings, HybridRetriever, index_text
from aiflywheel.tasks.assistant.types import Chunk, RetrievalHit
from aiflywheel.tasks.assistant.vector_search import IvfSearch

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # format 1: one generation folder, no segments
MANIFEST = "manifest.json"
MAX_SEGMENTS = 32
MAX_DELETED_SHARE = 0.1
GRAPH = "vectors.faiss"
GRAPH_LABELS = "vectors-labels.npy"
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
    # where each row is stored: segment number (in ``segments``) and row inside it;
    # rows not written yet have segment number len(segments)
    segment_of: np.ndarray | None = None
    row_in_segment: np.ndarray | None = None
    segments: tuple[tuple[str, int], ...] = ()  # (folder name, rows written)
    vectors: IvfSearch | None = None

    def unwritten(self) -> np.ndarray:
        """Rows not stored in any segment yet."""
        if self.segment_of is None:
            return np.arange(len(self.chunks))
        return np.flatnonzero(self.segment_of == len(self.segments))


def _wants_graph(rows: int) -> bool:
    return rows >= vector_search.ANN_MIN_CHUNKS and vector_search.ann_available()


def _with_vectors(state: _State) -> _State:
    """``state`` with an IVF vector index over its rows when its size calls for one (and
    faiss is installed), else exact search."""
    if state.vectors is None and _wants_graph(len(state.chunks)):
        return dataclasses.replace(state, vectors=IvfSearch.build(state.embeddings))
    return state


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
    def dense_search(self) -> str:
        """How dense candidates are found: ``ivf`` (approximate) or ``exact``."""
        return "ivf" if self._state.vectors is not None else "exact"

    @property
    def segments(self) -> list[str]:
        """The folders the index is stored in, base first."""
        return [name for name, _ in self._state.segments]

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
                vectors=state.vectors if self.encoder is not None else None,
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
        vectors: IvfSearch | None = None,
    ) -> KnowledgeIndex:
        """Write an index from parts computed elsewhere (row i of ``embeddings`` and BM25
        document i belong to ``chunks[i]``), e.g. embeddings computed on another machine;
        ``vectors``: an IVF index over exactly these rows, built elsewhere (else one is
        built here when the index is large enough)."""
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
            vectors=vectors,
        )
        directory = Path(directory)
        previous = int(_read_manifest(directory)["generation"]) if _has_index(directory) else 0
        index = cls(directory, state, encoder, generation=previous, fusion=fusion)
        index._commit(_with_vectors(state), whole=True)
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
        if manifest.get("format") not in READABLE_FORMATS:
            raise DataError(
                f"knowledge index {directory} has format {manifest.get('format')!r}, "
                f"expected {FORMAT_VERSION}; build it again"
            )
        generation = int(manifest["generation"])
        names = manifest.get("segments") or [_generation_name(generation)]
        deleted = manifest.get("deleted") or {}
        parts = [_read_segment(directory / name) for name in names]
        chunks = [c for part in parts for c in part[0]]
        sizes = [len(part[0]) for part in parts]
        embeddings = (
            np.vstack([part[1] for part in parts]) if len(parts) > 1 else parts[0][1]
        ).astype(np.float32, copy=False)
        bm25_parts = [part[2] for part in parts]
        segment_of = np.repeat(np.arange(len(names), dtype=np.int64), sizes)
        row_in_segment = np.concatenate(
            [np.arange(size, dtype=np.int64) for size in sizes] or [np.zeros(0, np.int64)]
        )
        keep = np.ones(len(chunks), dtype=bool)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for n, name in enumerate(names):
            rows = np.asarray(deleted.get(name, []), dtype=np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= sizes[n]):
                raise DataError(f"knowledge index {directory}: deleted rows out of range in {name}")
            keep[offsets[n] + rows] = False
        if all(b.tokenizer_version == TOKENIZER_VERSION for b in bm25_parts):
            bm25 = _merged_bm25(bm25_parts, keep)
        else:
            live = [c for c, kept in zip(chunks, keep, strict=True) if kept]
            bm25 = Bm25Index.build(
                [bm25_tokens(index_text(c)) for c in live],
                k1=bm25_parts[0].k1,
                b=bm25_parts[0].b,
            )
        live_chunks = [c for c, kept in zip(chunks, keep, strict=True) if kept]
        if len(live_chunks) != manifest["chunks"]:
            raise DataError(
                f"knowledge index {directory} is inconsistent: {len(live_chunks)} chunks, "
                f"manifest says {manifest['chunks']} chunks"
            )
        vectors = None
        if encoder is not None and _wants_graph(len(live_chunks)):
            vectors = _load_graph(directory / names[0], sizes[0], embeddings, keep)
        state = _State(
            chunks=live_chunks,
            embeddings=embeddings[keep] if not keep.all() else embeddings,
            bm25=bm25,
            encoder_name=str(manifest["encoder"]),
            runtime_ids=frozenset(manifest.get("runtime_chunks", [])),
            segment_of=segment_of[keep],
            row_in_segment=row_in_segment[keep],
            segments=tuple(zip(names, sizes, strict=True)),
            vectors=vectors,
        )
        if encoder is not None and vectors is None:
            state = _with_vectors(state)
        return cls(directory, state, encoder, generation=generation, fusion=fusion)

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
                self._commit(_with_vectors(state), whole=True)
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
                self._commit(self._changed(old, drop, new, runtime_ids, progress), whole=True)
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
        embeddings = old.embeddings[mask] if drop else old.embeddings
        bm25 = old.bm25.changed(drop, [bm25_tokens(index_text(c)) for c in new])
        segment_of, row_in_segment = old.segment_of, old.row_in_segment
        if segment_of is None or row_in_segment is None:
            segment_of = np.full(len(old.chunks), len(old.segments), dtype=np.int64)
            row_in_segment = np.arange(len(old.chunks), dtype=np.int64)
        segment_of, row_in_segment = segment_of[mask], row_in_segment[mask]
        if new:
            chunks += new
            embeddings = np.vstack([embeddings, vectors]).astype(np.float32, copy=False)
            segment_of = np.concatenate(
                [segment_of, np.full(len(new), len(old.segments), dtype=np.int64)]
            )
            row_in_segment = np.concatenate([row_in_segment, np.arange(len(new))])
        graph = old.vectors.changed(mask, vectors) if old.vectors is not None else None
        state = _State(
            chunks,
            embeddings,
            bm25,
            old.encoder_name,
            frozenset(runtime_ids),
            segment_of=segment_of,
            row_in_segment=row_in_segment,
            segments=old.segments,
            vectors=graph,
        )
        return _with_vectors(state) if graph is None else state

    def _commit(self, state: _State, *, whole: bool = False) -> None:
        """Persist ``state`` (whole, or as a new segment and deleted rows), then make it
        current with a fresh retriever (keeping the cached query vectors). When writing
        fails, the shared vector index is put back as it was."""
        try:
            state = self._write(state, whole=whole or self._needs_whole(state))
        except BaseException:
            old = self._state
            shared = state.vectors is not None and old.vectors is not None
            if shared and state.vectors.index is old.vectors.index:
                old.vectors.restore(old.embeddings, state.vectors)
            raise
        old = self._retriever
        self._state = state
        self._retriever = None
        if old is not None and self.encoder_matches:
            self.retriever().adopt_query_cache(old)

    def _needs_whole(self, state: _State) -> bool:
        """Whether a change is written as a new base segment: nothing written yet, too
        many segments, or too many deleted rows."""
        if not state.segments or state.segment_of is None:
            return True
        if len(state.segments) >= MAX_SEGMENTS:
            return True
        written = sum(rows for _, rows in state.segments)
        live_written = len(state.chunks) - len(state.unwritten())
        return written - live_written > MAX_DELETED_SHARE * max(written, 1)

    # ------------------------------------------------------------ writing

    def _write(self, state: _State, *, whole: bool) -> _State:
        """Write a new folder (all rows, or only the rows not written yet), then switch
        the manifest to it. Returns ``state`` with its rows' storage recorded."""
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        generation = self.generation + 1
        while (directory / _generation_name(generation)).exists():
            generation += 1
        name = _generation_name(generation)
        rows = np.arange(len(state.chunks)) if whole else state.unwritten()
        segments = () if whole else state.segments
        if rows.size or whole:
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-gen-", dir=directory))
            try:
                _write_segment(tmp, state, rows, whole=whole)
                os.rename(tmp, directory / name)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            segments = (*segments, (name, int(rows.size)))
        if whole:
            segment_of = np.zeros(len(state.chunks), dtype=np.int64)
            row_in_segment = np.arange(len(state.chunks), dtype=np.int64)
        else:
            segment_of = state.segment_of.copy()
            row_in_segment = state.row_in_segment
            segment_of[rows] = len(segments) - 1  # (no rows: nothing is pending)
        deleted: dict[str, list[int]] = {}
        for n, (segment, size) in enumerate(segments):
            live = row_in_segment[segment_of == n]
            if live.size < size:
                gone = np.setdiff1d(np.arange(size), live, assume_unique=True)
                deleted[segment] = [int(r) for r in gone]
        faq = sum(1 for c in state.chunks if c.kind == "faq")
        manifest = {
            "format": FORMAT_VERSION,
            "generation": generation,
            "segments": [segment for segment, _ in segments],
            "deleted": deleted,
            "encoder": state.encoder_name,
            "dim": int(state.embeddings.shape[1]) if state.embeddings.ndim == 2 else 0,
            "chunks": len(state.chunks),
            "faq_chunks": faq,
            "doc_chunks": len(state.chunks) - faq,
            "dense_search": "ivf" if state.vectors is not None else "exact",
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
        keep = {segment for segment, _ in segments} | {s for s, _ in self._state.segments}
        if not self._state.segments:  # opened from a format-1 folder, or new
            keep.add(_generation_name(self.generation))
        self.generation = generation
        _prune(directory, keep=keep)
        return dataclasses.replace(
            state, segments=segments, segment_of=segment_of, row_in_segment=row_in_segment
        )


def _write_segment(folder: Path, state: _State, rows: np.ndarray, *, whole: bool) -> None:
    """The files of one segment (``rows`` of ``state``) into ``folder``, synced."""
    lines = "".join(
        json.dumps(dataclasses.asdict(state.chunks[i]), ensure_ascii=False) + "\n" for i in rows
    )
    (folder / "chunks.jsonl").write_text(lines, encoding="utf-8")
    with (folder / "embeddings.npy").open("wb") as handle:
        np.save(handle, np.ascontiguousarray(state.embeddings[rows], dtype=np.float32))
    if whole:
        bm25 = state.bm25
    else:
        bm25 = Bm25Index.build(
            [bm25_tokens(index_text(state.chunks[i])) for i in rows],
            k1=state.bm25.k1,
            b=state.bm25.b,
        )
    counts, meta = bm25.to_bytes()
    (folder / "bm25.npz").write_bytes(counts)
    (folder / "bm25.json").write_text(meta, encoding="utf-8")
    if whole and state.vectors is not None:
        state.vectors.save(folder / GRAPH)
        np.save(folder / GRAPH_LABELS, state.vectors.row_of_label)
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _read_segment(folder: Path) -> tuple[list[Chunk], np.ndarray, Bm25Index]:
    """(chunks, embeddings, BM25 over them) of one segment folder."""
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
    sizes = {"chunks": len(chunks), "embeddings": embeddings.shape[0], "bm25": len(bm25)}
    if len(set(sizes.values())) != 1:
        raise DataError(f"knowledge index {folder} is inconsistent: {sizes}")
    return chunks, embeddings, bm25


def _merged_bm25(parts: Sequence[Bm25Index], keep: np.ndarray) -> Bm25Index:
    """One BM25 index over the segments' documents in order, rows ``keep`` only."""
    if len(parts) == 1 and keep.all():
        return parts[0]
    from scipy import sparse

    terms: list[str] = []
    column: dict[str, int] = {}
    maps = []
    for part in parts:
        local = [""] * len(part.vocabulary)
        for term, col in part.vocabulary.items():
            local[col] = term
        maps.append(np.asarray([column.setdefault(t, len(column)) for t in local], np.int64))
    terms = [""] * len(column)
    for term, col in column.items():
        terms[col] = term
    blocks = []
    for part, mapping in zip(parts, maps, strict=True):
        counts = part.counts
        blocks.append(
            sparse.csr_matrix(
                (counts.data, mapping[counts.indices], counts.indptr),
                shape=(counts.shape[0], len(terms)),
            )
        )
    merged = sparse.vstack(blocks, format="csr")[keep]
    return Bm25Index.from_counts(merged, terms, k1=parts[0].k1, b=parts[0].b)


def _load_graph(
    base: Path, base_rows: int, embeddings: np.ndarray, keep: np.ndarray
) -> IvfSearch | None:
    """The base segment's vector index, with the later segments' rows added and the
    deleted rows taken out; ``None`` when the base has none (one is built instead)."""
    if not (base / GRAPH).is_file() or not (base / GRAPH_LABELS).is_file():
        return None
    labels = np.load(base / GRAPH_LABELS, allow_pickle=False)
    graph = IvfSearch.load(base / GRAPH, labels, embeddings.shape[1])
    if labels.size and labels.max() >= base_rows:
        raise DataError(f"vector index in {base} maps labels past its {base_rows} rows")
    later = embeddings[base_rows:]
    graph = graph.changed(np.ones(base_rows, dtype=bool), later if len(later) else None)
    if not keep.all():
        graph = graph.changed(keep, None)
    return graph


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


def _prune(directory: Path, *, keep: set[str]) -> None:
    """Delete generation folders other than ``keep`` (those of the current manifest and
    the one before it) and temporary folders left by a crash more than an hour ago."""
    for path in directory.iterdir():
        if path.name.startswith("gen-") and path.is_dir():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".tmp-gen-") and time.time() - path.stat().st_mtime > 3600:
            shutil.rmtree(path, ignore_errors=True)
