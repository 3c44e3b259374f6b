"""Drift: shifted traffic raises the alarm, traffic from the training distribution does not."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from aiflywheel.errors import DataError, NotFoundError, RecipeError  # noqa: E402
from aiflywheel.monitoring.drift import (  # noqa: E402
    category_psi,
    drift_report,
    ks,
    numeric_psi,
    oov_shares,
    psi,
)
from aiflywheel.recipe import parse_recipe  # noqa: E402
from aiflywheel.settings import get_settings  # noqa: E402
from aiflywheel.store import Store, open_store  # noqa: E402
from analytics_world import FEATURE, build_champion, english, log_traffic, shifted  # noqa: E402


@pytest.fixture
def store() -> Store:
    return open_store()  # the test's own FLYWHEEL_HOME (conftest)


def test_statistics_are_zero_for_equal_samples_and_grow_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    same = rng.normal(size=2000)
    assert psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert numeric_psi(same, same) == pytest.approx(0.0)
    assert numeric_psi(same, same + 2) > 1.0
    d, p = ks(same, same + 2)
    assert d > 0.6 and p < 1e-6
    assert category_psi(["en"] * 50, ["en"] * 50) == pytest.approx(0.0)
    assert category_psi(["en"] * 50, ["zh"] * 50) > 5
    assert oov_shares(["new words", "物流", ""], {"new", "物"}) == [0.5, 0.5, 0.0]
    with pytest.raises(DataError, match="non-empty histograms"):
        psi([0, 0], [1, 1])


def test_shifted_traffic_raises_the_alarm_and_unshifted_traffic_does_not(
    store: Store, tmp_path: Path
) -> None:
    model, version, _ = build_champion(store, tmp_path)
    rng = random.Random(7)  # not the training seed: new texts, same distribution
    log_traffic(store, model, version, [english(rng, i)[0] for i in range(5000, 5200)])
    calm = drift_report(FEATURE, store=store, settings=get_settings())
    assert calm.window_rows == 200 and calm.version == version
    names = {(c.name, c.statistic) for c in calm.checks}
    assert {
        ("input_length", "psi"),
        ("input_length", "ks"),
        ("language_mix", "psi"),
        ("oov_share", "ks"),
        ("prediction", "psi"),
        ("confidence", "ks"),
        ("embedding", "auc"),
    } <= names
    assert not calm.alarm, [c for c in calm.checks if c.alarm]
    assert "TF-IDF" in next(c for c in calm.checks if c.name == "embedding").detail

    log_traffic(store, model, version, [shifted(rng, i) for i in range(300)])
    storm = drift_report(FEATURE, store=store, settings=get_settings(), window=300)
    assert storm.alarm
    alarmed = {c.name for c in storm.checks if c.alarm}
    assert {"input_length", "language_mix", "oov_share", "embedding"} <= alarmed
    dumped = storm.model_dump(mode="json")
    assert set(dumped) == {
        "feature",
        "version",
        "window_rows",
        "reference_rows",
        "computed_at",
        "alarm",
        "checks",
        "history",
    }
    assert [h["alarm"] for h in dumped["history"]] == [False, True]
    assert dumped["history"][-1]["worst_check"].split("/")[0] in alarmed


def test_a_small_window_shows_figures_without_an_alarm(store: Store, tmp_path: Path) -> None:
    model, version, _ = build_champion(store, tmp_path)
    log_traffic(store, model, version, [shifted(random.Random(1), i) for i in range(20)])
    report = drift_report(FEATURE, store=store, settings=get_settings())
    assert report.window_rows == 20 and report.checks and not report.alarm


def test_thresholds_come_from_the_recipe_and_unknown_keys_are_refused(
    store: Store, tmp_path: Path
) -> None:
    model, version, _ = build_champion(
        store, tmp_path, recipe_extra={"monitor": {"drift": {"min_rows": 5, "psi_threshold": 9}}}
    )
    log_traffic(store, model, version, [shifted(random.Random(1), i) for i in range(20)])
    report = drift_report(FEATURE, store=store, settings=get_settings())
    psi_checks = [c for c in report.checks if c.statistic == "psi"]
    assert psi_checks and all(9 < c.threshold < 10 for c in psi_checks)
    assert report.alarm  # ks/auc still alarm once 5 rows are enough
    with pytest.raises(RecipeError, match="monitor.drift.psi"):
        parse_recipe(
            {"feature": "f", "data": {"source": "x.csv"}, "monitor": {"drift": {"psi": 1}}}
        )


def test_no_champion_or_unknown_feature_is_one_line(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="unknown feature 'nope'"):
        drift_report("nope", store=store, settings=get_settings())
    store.upsert_feature(
        "other", "text_classification", "", {"feature": "other", "data": {"source": "x.csv"}}
    )
    with pytest.raises(NotFoundError, match="has no champion"):
        drift_report("other", store=store, settings=get_settings())
    with pytest.raises(DataError, match="window must be a positive"):
        drift_report("other", store=store, settings=get_settings(), window=0)


@pytest.mark.parametrize("size, seed", [(50, 11), (400, 12)])
def test_calm_windows_of_any_size_raise_no_alarm(
    store: Store, tmp_path: Path, size: int, seed: int
) -> None:
    model, version, _ = build_champion(store, tmp_path)
    rng = random.Random(seed)
    log_traffic(store, model, version, [english(rng, i)[0] for i in range(size)])
    report = drift_report(FEATURE, store=store, settings=get_settings())
    assert report.window_rows == size
    assert not report.alarm, [c for c in report.checks if c.alarm]
