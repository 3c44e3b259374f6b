"""The knowledge index at scale, in miniature: BM25 top-k by max-score pruning (the same
ranking as scoring every document), an IVF vector index for the dense side (faiss; exact
search when it is missing), and append-only writes (an added entry is a new segment,
a removed one a deleted row; the base is not rewritten), atomic and crash-safe.

The ANN threshold is lowered to a few dozen chunks so a tiny index uses the IVF index; the
encoder is the deterministic ``HashingEncoder``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from tests.assistant_parts import HashingEncoder

from aiflywheel.tasks.assistant import knowledge_index as knowledge_index_module
from aiflywheel.tasks.assistant import vector_search
from aiflywheel.tasks.assistant.bm25 import Bm25Index
from aiflywheel.tasks.assistant.chunking import make_chunk
from aiflywheel.tasks.assistant.knowledge_base import faq_entry_chunk
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.retrieval import HybridRetriever

WORDS = [
    "refund",
    "parcel",
    "courier",
    "invoice",
    "card",
    "points",
    "member",
    "coupon",
    "warranty",
    "return",
    "exchange",
    "address",
    "phone",
    "order",
    "ship",
    "deliver",
    "cash",
    "tax",
    "gift",
    "screen",
    "battery",
    "charger",
    "size",
    "colour",
    "price",
    "discount",
    "label",
    "box",
    "week",
    "day",
    "hour",
    "store",
    "account",
    "password",
    "email",
    "china",
    "tibet",
]
needs_faiss = pytest.mark.skipif(
    not vector_search.ann_available(), reason="faiss (the ann extra) is not installed"
)


def corpus(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [
        make_chunk(
            kind="doc",
            source="docs/synthetic.md",
            anchor=f"c{i}",
            text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))),
            language="en",
        )
        for i in range(n)
    ]


def folders(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("gen-"))


@pytest.fixture
def small_ann(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_search, "ANN_MIN_CHUNKS", 50)


# ------------------------------------------------------------------ BM25 top-k


def test_bm25_top_matches_scoring_every_document() -> None:
    rng = random.Random(1)
    docs = [[rng.choice(WORDS[:20]) for _ in range(rng.randint(1, 15))] for _ in range(400)]
    index = Bm25Index.build(docs)
    for _ in range(60):
        query = [rng.choice(WORDS[:24]) for _ in range(rng.randint(1, 6))]
        scores = index.scores(query)
        for k in (1, 5, 50, 1000):
            ids, values = index.top(query, k)
            hits = np.flatnonzero(scores > 0)
            expected = hits[np.lexsort((hits, -scores[hits]))][:k]
            assert np.allclose(scores[ids], values, atol=1e-5)
            # the same scores in the same order (ties may pick other documents)
            assert np.allclose(np.sort(scores[expected])[::-1], values, atol=1e-5)
            assert (values > 0).all()
        some = rng.sample(range(len(docs)), 30)
        assert np.allclose(index.scores_for(query, some), scores[some], atol=1e-5)
    assert index.top(["nothing-like-this"], 5)[0].size == 0
    # one reweight for a removal and an addition: the same as building it again
    changed = index.changed([3, 10], [["refund", "parcel"], ["tibet"]])
    again = Bm25Index.build(
        [d for i, d in enumerate(docs) if i not in (3, 10)] + [["refund", "parcel"], ["tibet"]]
    )
    for query in (["refund"], ["tibet", "parcel"], ["card", "points", "member"]):
        assert np.allclose(changed.scores(query), again.scores(query), atol=1e-5)
    assert len(index) == 400  # not modified
    assert index.postings == sum(len(set(d)) for d in docs)


# ------------------------------------------------------------------ HNSW and segments


@needs_faiss
def test_ivf_index_add_remove_search_reopen(tmp_path: Path, small_ann) -> None:
    encoder = HashingEncoder(dim=64)
    chunks = corpus(300)
    index = KnowledgeIndex.build(chunks, encoder, tmp_path / "idx")
    assert index.dense_search == "ivf"
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["dense_search"] == "ivf" and manifest["segments"] == folders(tmp_path / "idx")
    base = tmp_path / "idx" / manifest["segments"][0]
    assert {"vectors.faiss", "vectors-labels.npy"} <= {p.name for p in base.iterdir()}

    # dense candidates from the IVF index are as near as exact search's (the hashing
    # encoder gives many equal cosines, so ties may pick other chunks)
    exact = HybridRetriever(index.chunks, index.retriever().bm25, index.embeddings, encoder)
    rng = random.Random(2)
    for _ in range(20):
        query = " ".join(rng.choice(WORDS) for _ in range(3))
        ann = [h.dense_score for h in index.search(query, 5, mode="dense")]
        truth = [h.dense_score for h in exact.search(query, 5, mode="dense")]
        assert ann == pytest.approx(truth, abs=1e-5)

    # adding an entry writes a new segment of one chunk; the base stays as it was
    stamp = {p.name: p.stat().st_mtime_ns for p in base.iterdir()}
    entry = faq_entry_chunk("Can I pay with seashells?", "Only in the beach shop.")
    assert index.add_chunks([entry]).added == 1
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert len(manifest["segments"]) == 2 and manifest["segments"][0] == base.name
    assert {p.name: p.stat().st_mtime_ns for p in base.iterdir()} == stamp
    added = tmp_path / "idx" / manifest["segments"][1]
    assert len((added / "chunks.jsonl").read_text().splitlines()) == 1
    assert index.search("pay with seashells", 1, mode="dense")[0].chunk.id == entry.id
    assert index.search("seashells", 1, mode="bm25")[0].chunk.id == entry.id

    # removing chunks records deleted rows; they are gone from both retrievers
    gone = chunks[7]
    index.remove_chunks([gone.id])
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["deleted"] == {base.name: [7]} and manifest["chunks"] == 300
    for mode in ("dense", "bm25", "hybrid"):
        assert gone.id not in {h.chunk.id for h in index.search(gone.text, 50, mode=mode)}

    reopened = KnowledgeIndex.load(tmp_path / "idx", encoder)
    assert reopened.dense_search == "ivf"
    assert [c.id for c in reopened.chunks] == [c.id for c in index.chunks]
    assert np.allclose(reopened.embeddings, index.embeddings)
    assert reopened.search("pay with seashells", 1, mode="dense")[0].chunk.id == entry.id
    assert gone.id not in {h.chunk.id for h in reopened.search(gone.text, 50, mode="dense")}
    query = "refund parcel courier"
    assert [h.chunk.id for h in reopened.search(query, 5, mode="bm25")] == [
        h.chunk.id for h in index.search(query, 5, mode="bm25")
    ]


@needs_faiss
def test_a_failed_write_changes_nothing(
    tmp_path: Path, small_ann, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = HashingEncoder(dim=64)
    chunks = corpus(120)
    index = KnowledgeIndex.build(chunks, encoder, tmp_path / "idx")
    before = folders(tmp_path / "idx")
    victim = chunks[3]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(knowledge_index_module, "write_json_atomic", crash)
    with pytest.raises(OSError, match="disk full"):
        index.remove_chunks([victim.id])
    with pytest.raises(OSError, match="disk full"):
        index.add_chunks([faq_entry_chunk("new?", "yes")])
    monkeypatch.undo()
    assert len(index) == 120
    # the row the failed removal took out of the vector index is searchable again
    assert victim.id in {h.chunk.id for h in index.search(victim.text, 5, mode="dense")}
    reopened = KnowledgeIndex.load(tmp_path / "idx", encoder)
    assert [c.id for c in reopened.chunks] == [c.id for c in chunks]
    assert index.add_chunks([faq_entry_chunk("new?", "yes")]).added == 1
    assert len(KnowledgeIndex.load(tmp_path / "idx", encoder)) == 121
    assert set(before) <= set(folders(tmp_path / "idx"))  # the previous folders are kept


@needs_faiss
def test_many_segments_are_compacted(
    tmp_path: Path, small_ann, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knowledge_index_module, "MAX_SEGMENTS", 3)
    encoder = HashingEncoder(dim=64)
    index = KnowledgeIndex.build(corpus(80), encoder, tmp_path / "idx")
    counts = []
    for n in range(4):
        index.add_chunks([faq_entry_chunk(f"question {n} about seashells?", f"answer {n}")])
        counts.append(len(index.segments))
    assert counts == [2, 3, 1, 2]  # the third add wrote one new base
    reopened = KnowledgeIndex.load(tmp_path / "idx", encoder)
    assert len(reopened) == 84 and reopened.dense_search == "ivf"
    hit = reopened.search("question 3 about seashells", 1)[0]
    assert hit.chunk.text == "question 3 about seashells?"


def test_exact_search_without_faiss(
    tmp_path: Path, small_ann, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = HashingEncoder(dim=64)
    chunks = corpus(120)
    if vector_search.ann_available():  # an index written with a graph ...
        KnowledgeIndex.build(chunks, encoder, tmp_path / "idx")
    monkeypatch.setattr(vector_search, "ann_available", lambda: False)
    if not vector_search.ann_available() and not (tmp_path / "idx").exists():
        KnowledgeIndex.build(chunks, encoder, tmp_path / "idx")
    index = KnowledgeIndex.load(tmp_path / "idx", encoder)  # ... opened without faiss
    assert index.dense_search == "exact"
    exact = HybridRetriever(index.chunks, index.retriever().bm25, index.embeddings, encoder)
    for query in ("refund parcel", "gift card battery", "tibet cash"):
        assert [h.chunk.id for h in index.search(query, 5)] == [
            h.chunk.id for h in exact.search(query, 5)
        ]
    entry = faq_entry_chunk("Can I pay with seashells?", "Only in the beach shop.")
    index.add_chunks([entry])
    assert index.search("pay with seashells", 1, mode="dense")[0].chunk.id == entry.id


def test_format_1_indexes_still_load(tmp_path: Path) -> None:
    encoder = HashingEncoder(dim=64)
    chunks = corpus(30)
    KnowledgeIndex.build(chunks, encoder, tmp_path / "idx")
    path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("segments", "deleted", "dense_search"):
        manifest.pop(key)
    manifest["format"] = 1
    path.write_text(json.dumps(manifest))
    index = KnowledgeIndex.load(tmp_path / "idx", encoder)
    assert [c.id for c in index.chunks] == [c.id for c in chunks]
    index.add_chunks([faq_entry_chunk("Can I pay with seashells?", "Only in the beach shop.")])
    again = KnowledgeIndex.load(tmp_path / "idx", encoder)
    assert len(again) == 31 and json.loads(path.read_text())["format"] == 2
