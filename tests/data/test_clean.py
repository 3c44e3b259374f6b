from __future__ import annotations

from aiflywheel.data.clean import clean_dataset, clean_text, training_view, truncate_text
from aiflywheel.data.dataset import Dataset, Record
from aiflywheel.recipe import CleanConfig, PiiConfig

OFF = PiiConfig(mode="off")


def _ds(*items) -> Dataset:
    return Dataset(
        Record(id=f"r{i}", text=text, label=label) for i, (text, label) in enumerate(items)
    )


def test_clean_text_normalizes_unicode_html_controls_and_whitespace() -> None:
    config = CleanConfig()
    assert clean_text("ＡＰＰ闪退　１２３", config) == "APP闪退 123"
    assert clean_text("<p>I can&#39;t <b>log in</b></p><br>now", config) == "I can't log in now"
    assert clean_text("<script>alert(1)</script>hello", config) == "hello"
    assert clean_text("a\x07b\u200bc\t\n  d", config) == "abc d"
    assert clean_text("2 < 3 and 5 > 4", config) == "2 < 3 and 5 > 4"


def test_options_can_turn_normalization_off() -> None:
    config = CleanConfig(unicode_nfkc=False, strip_html=False, collapse_whitespace=False)
    assert clean_text("ＡＰＰ <b>x</b>  y", config) == "ＡＰＰ <b>x</b>  y"


def test_row_filters_are_counted_by_reason() -> None:
    result = clean_dataset(
        _ds(("   ", "a"), ("x", "a"), ("ok text", "a"), ("y" * 50, "b"), ("z" * 10_000_000, "b")),
        CleanConfig(min_chars=2, max_chars=20, too_long="drop"),
        OFF,
    )
    assert result.drops == {"empty": 1, "too_short": 1, "too_long": 2}
    assert [r.text for r in result.dataset] == ["ok text"]
    assert result.dropped_ids["r4"] == "too_long"
    assert result.too_long_by_label == {"b": 2}
    assert result.rows_by_label == {"a": 3, "b": 2}


def test_too_long_rows_are_truncated_by_default_and_counted_per_label() -> None:
    result = clean_dataset(
        _ds(("ok text", "a"), ("y" * 50, "b"), ("z " * 5_000_000, "b"), ("w" * 21, "a")),
        CleanConfig(max_chars=20),
        OFF,
    )
    assert result.drops == {}
    assert [r.text for r in result.dataset] == [
        "ok text",
        "y" * 20,
        "z z z z z z z z z z",
        "w" * 20,
    ]
    assert result.changes["truncated"] == 3
    assert result.too_long_by_label == {"b": 2, "a": 1}
    assert result.rows_by_label == {"a": 2, "b": 2}


def test_truncation_redacts_first_and_keeps_placeholders_and_marks_whole() -> None:
    phone = "call 13812345678 now"  # the number straddles the cut at 10
    result = clean_dataset(_ds((phone, "a")), CleanConfig(max_chars=10), PiiConfig())
    assert [r.text for r in result.dataset] == ["call"]  # not "call <PHO", not "call 13812"
    assert result.pii_hits == {"phone": 1}
    decomposed = CleanConfig(max_chars=3, unicode_nfkc=False)
    result = clean_dataset(_ds(("abe\u0301cd", "a")), decomposed, OFF)
    assert [r.text for r in result.dataset] == ["ab"]  # é is not split from its accent
    assert truncate_text("😀" * 5, 3) == "😀😀😀"


def test_training_view_truncates_like_clean() -> None:
    assert training_view("  " + "x" * 30, CleanConfig(max_chars=10), OFF) == "x" * 10
    assert training_view("x" * 30, CleanConfig(max_chars=10, too_long="drop"), OFF) == "x" * 30


def test_exact_and_near_duplicates() -> None:
    result = clean_dataset(
        _ds(
            ("I was charged twice", "billing"),
            ("I was charged twice", "billing"),
            ("i was CHARGED twice!!", "billing"),
            ("Where is my parcel", "shipping"),
        ),
        CleanConfig(),
        OFF,
    )
    assert result.drops == {"duplicate": 1, "near_duplicate": 1}
    assert len(result.dataset) == 2
    assert result.duplicate_examples[0]["dropped"] == "i was CHARGED twice!!"


def test_exact_mode_keeps_case_variants() -> None:
    result = clean_dataset(
        _ds(("Same text", "a"), ("Same text", "a"), ("same text", "a")),
        CleanConfig(duplicates="exact"),
        OFF,
    )
    assert result.drops == {"duplicate": 1} and len(result.dataset) == 2


def test_fuzzy_near_duplicates_need_the_same_label() -> None:
    long_a = "the delivery was late by three days and the box arrived crushed at the corner"
    long_b = "the delivery was late by three days and the box arrived crushed at the corners"
    long_c = "the delivery was late by three days and the box arrived crushed at the corner."
    result = clean_dataset(
        _ds((long_a, "shipping"), (long_b, "shipping"), (long_c + " again", "refund")),
        CleanConfig(near_duplicate_threshold=0.9),
        OFF,
    )
    assert result.drops == {"near_duplicate": 1}
    assert result.similar_with_other_label >= 1
    assert {r.label for r in result.dataset} == {"shipping", "refund"}


def test_conflicting_label_policies() -> None:
    items = (("same words", "a"), ("Same words!", "b"), ("same words", "a"), ("other", "c"))
    dropped = clean_dataset(_ds(*items), CleanConfig(conflicting_labels="drop"), OFF)
    assert dropped.drops == {"conflicting_label": 3}
    assert dropped.conflicting_label_groups == 1

    majority = clean_dataset(_ds(*items), CleanConfig(conflicting_labels="majority"), OFF)
    assert [(r.text, r.label) for r in majority.dataset] == [("same words", "a"), ("other", "c")]
    assert majority.drops == {"conflicting_label": 1, "duplicate": 1}

    kept = clean_dataset(_ds(*items), CleanConfig(conflicting_labels="keep"), OFF)
    assert len(kept.dataset) == 4 and kept.conflicting_label_groups == 1


def test_majority_tie_drops_the_group() -> None:
    result = clean_dataset(
        _ds(("tie text", "a"), ("tie text", "b")), CleanConfig(conflicting_labels="majority"), OFF
    )
    assert result.drops == {"conflicting_label": 2}


def test_pii_is_redacted_counted_or_dropped() -> None:
    items = (
        ("请联系我 13812345678 谢谢", "a"),
        ("mail li.ming@example.com now", "b"),
        ("clean row", "a"),
    )
    redacted = clean_dataset(_ds(*items), CleanConfig(), PiiConfig(mode="redact"))
    texts = [r.text for r in redacted.dataset]
    assert "请联系我 <PHONE> 谢谢" in texts and "mail <EMAIL> now" in texts
    assert redacted.rows_with_pii == 2
    assert redacted.pii_hits == {"phone": 1, "email": 1}

    dropped = clean_dataset(_ds(*items), CleanConfig(), PiiConfig(mode="drop_row"))
    assert dropped.drops == {"pii": 2} and [r.text for r in dropped.dataset] == ["clean row"]

    only_email = clean_dataset(
        _ds(*items), CleanConfig(), PiiConfig(mode="redact", types=["email"])
    )
    assert "请联系我 13812345678 谢谢" in [r.text for r in only_email.dataset]
