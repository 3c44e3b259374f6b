"""chrF/BLEU with bootstrap CIs, the paired comparison, and the two baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU, CHRF

from aiflywheel.errors import DataError, NotFittedError
from aiflywheel.metrics.translation import corpus_scores, paired_bootstrap, sentence_chrf
from aiflywheel.tasks.text_to_text.baselines import CopyBaseline, DictionaryBaseline

REFS = ["the cat sat on the mat", "a dog barks", "good morning", "see you tomorrow", "thanks"]
GOOD = ["the cat sat on a mat", "a dog barks", "good morning", "see you later", "thank you"]
BAD = ["cat", "dog", "morning", "you", "no"]


def test_corpus_scores_are_sacrebleus_with_a_ci_around_them() -> None:
    scores = corpus_scores(GOOD, REFS, target_language="en", resamples=200, seed=1)
    assert scores["chrF"]["score"] == pytest.approx(CHRF().corpus_score(GOOD, [REFS]).score, 1e-3)
    bleu = BLEU(effective_order=True).corpus_score(GOOD, [REFS]).score
    assert scores["BLEU"]["score"] == pytest.approx(bleu, 1e-3)
    for name in ("chrF", "BLEU"):
        lo, hi = scores[name]["ci"]
        assert lo <= scores[name]["score"] <= hi and lo < hi
    with pytest.raises(DataError, match="1 outputs for 5 references"):
        corpus_scores(GOOD[:1], REFS, target_language="en")


def test_chinese_targets_are_tokenized_for_bleu() -> None:
    refs, hyps = ["今天天气很好", "我们明天见"], ["今天天气好", "我们明天见"]
    scores = corpus_scores(hyps, refs, target_language="zh", resamples=100)
    assert scores["BLEU"]["score"] == pytest.approx(
        BLEU(tokenize="zh", effective_order=True).corpus_score(hyps, [refs]).score, 1e-3
    )


def test_paired_bootstrap_says_which_is_better() -> None:
    better = paired_bootstrap(GOOD, BAD, REFS, target_language="en", resamples=300, seed=0)
    assert better["diff"] > 0 and better["ci"][0] > 0 and better["p_better"] > 0.95
    worse = paired_bootstrap(BAD, GOOD, REFS, target_language="en", resamples=300, seed=0)
    assert worse["diff"] == pytest.approx(-better["diff"]) and worse["ci"][1] < 0
    same = paired_bootstrap(GOOD, GOOD, REFS, target_language="en", resamples=100)
    assert same["diff"] == 0 and same["ci"] == [0, 0]
    assert sentence_chrf(GOOD, REFS)[1] == 100.0


def test_copy_and_dictionary_baselines(tmp_path: Path) -> None:
    assert CopyBaseline().fit([], []).predict(["as is"]) == ["as is"]
    glossary = DictionaryBaseline(source_mode="char", target_mode="word").fit(
        ["中国", "人", "中", "你好", "你好"], ["China", "person", "middle", "hello", "hi"]
    )
    # The whole source when seen (its most frequent target), else longest matches;
    # unknown characters are copied.
    assert glossary.predict(["你好", "中国人", "中x"]) == ["hello", "China person", "middle x"]
    glossary.save(tmp_path)
    assert DictionaryBaseline.load(tmp_path).predict(["中国人"]) == ["China person"]
    words = DictionaryBaseline(source_mode="word", target_mode="char").fit(
        ["good morning", "good"], ["早上好", "好"]
    )
    assert words.predict(["good morning", "good good"]) == ["早上好", "好好"]
    with pytest.raises(NotFittedError):
        DictionaryBaseline().predict(["x"])
