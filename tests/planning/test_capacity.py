"""The planner: measured figures -> cost per 1k requests, cores for a load, monthly and
retrain cost; compress results read as they are; bad input is one line naming the field."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from aiflywheel.errors import DataError, NotFoundError, SettingsError  # noqa: E402
from aiflywheel.planning.capacity import measure_version, plan_capacity  # noqa: E402
from aiflywheel.settings import Settings, get_settings  # noqa: E402
from aiflywheel.store import Store, open_store  # noqa: E402
from analytics_world import FEATURE, build_champion  # noqa: E402


@pytest.fixture
def store() -> Store:
    return open_store()  # the test's own FLYWHEEL_HOME (conftest)


def _int8_variant(store: Store, root: Path, parent: int) -> int:
    """A compressed variant as `flywheel compress` registers it (figures written by hand)."""
    run = root / "compress-run"
    (run / "int8" / "model").mkdir(parents=True)
    (run / "compression.json").write_text(json.dumps({"machine": {"threads": 4}}))
    timing = {"size_mb": 2.0, "latency_ms": {"batch_1": {"p95": 4.0}}, "throughput_per_s": 800.0}
    parent_timing = {
        "size_mb": 8.0,
        "latency_ms": {"batch_1": {"p95": 12.0}},
        "throughput_per_s": 200.0,
    }
    metrics = {
        "compression": {
            "variant": "int8",
            "parent_version": parent,
            **timing,
            "parent": parent_timing,
        }
    }
    return store.register_model_version(
        FEATURE,
        run_id=None,
        dataset_version_id=None,
        model_path=str(run / "int8" / "model"),
        base_model="tiny",
        method="int8",
        metrics=metrics,
        recipe={},
    ).version


def test_measured_and_compress_figures_give_costs(store: Store, tmp_path: Path) -> None:
    _, version, run_dir = build_champion(store, tmp_path)
    settings = Settings(
        price_cpu_core_hour=0.36, price_llm_per_1k_tokens=0.01, llm_tokens_per_request=500
    )
    plan = plan_capacity(FEATURE, store=store, settings=settings, qps=50, p95_ms=200)
    first = plan.rows[0]
    assert first.version == version and first.cost_per_1k_requests is None
    assert "--measure" in first.source
    data = measure_version(FEATURE, version, store=store, texts=40)
    assert (run_dir / "serving_benchmark.json").is_file() and data["texts"] == 40
    int8 = _int8_variant(store, tmp_path, parent=version)
    plan = plan_capacity(FEATURE, store=store, settings=settings, qps=50, p95_ms=200)
    measured, variant, llm = plan.rows
    rate = measured.req_per_s_per_core
    assert rate > 0 and measured.variant == "tfidf" and "1 core" in measured.source
    assert measured.memory_mb > 20  # the timing process's peak: Python, sklearn, the model
    assert measured.cores_needed == math.ceil(50 / rate)
    assert measured.cost_per_1k_requests == pytest.approx(0.36 / 3600 / rate * 1000, rel=1e-3)
    assert measured.monthly_cost == pytest.approx(measured.cores_needed * 0.36 * 730, rel=1e-6)
    assert measured.meets_p95 is True
    # compress results: 800 texts/s over 4 threads = 200 per core
    assert (variant.version, variant.variant, variant.req_per_s_per_core) == (int8, "int8", 200.0)
    assert variant.cores_needed == 1 and variant.p95_ms == 4.0 and variant.size_mb == 2.0
    assert variant.cost_per_1k_requests == pytest.approx(0.36 / 3600 / 200 * 1000)
    assert llm.variant == "llm-api" and llm.cost_per_1k_requests == pytest.approx(5.0)
    assert llm.monthly_cost == pytest.approx(50 * 3600 * 730 / 1000 * 5.0)
    assert "assumed 500 tokens" in llm.source
    tight = plan_capacity(
        FEATURE, store=store, settings=settings, qps=50, p95_ms=1, versions=[int8]
    )
    assert [r.version for r in tight.rows] == [int8, None] and tight.rows[0].meets_p95 is False
    dumped = plan.model_dump(mode="json")
    assert set(dumped["prices"]) == {"cpu_core_hour", "gpu_hour", "llm_per_1k_tokens"}
    assert {
        "version",
        "variant",
        "req_per_s_per_core",
        "p95_ms",
        "memory_mb",
        "size_mb",
        "cost_per_1k_requests",
        "cores_needed",
        "gpus_needed",
        "monthly_cost",
        "retrain_cost",
        "meets_p95",
        "source",
    } == set(dumped["rows"][0])


def test_bad_input_names_the_field(store: Store, tmp_path: Path, monkeypatch) -> None:
    build_champion(store, tmp_path)
    settings = get_settings()
    with pytest.raises(DataError, match="qps must be a positive number, got 0"):
        plan_capacity(FEATURE, store=store, settings=settings, qps=0, p95_ms=200)
    with pytest.raises(DataError, match="p95_ms must be a positive number, got -5"):
        plan_capacity(FEATURE, store=store, settings=settings, qps=5, p95_ms=-5)
    with pytest.raises(SettingsError, match="price_cpu_core_hour must be a positive number"):
        plan_capacity(
            FEATURE, store=store, settings=Settings(price_cpu_core_hour=0), qps=5, p95_ms=200
        )
    prices = tmp_path / "prices.yaml"
    prices.write_text("price_gpu_hour: -1\n")
    monkeypatch.setenv("FLYWHEEL_PRICES_FILE", str(prices))
    with pytest.raises(SettingsError, match="price_gpu_hour must be a positive number"):
        plan_capacity(FEATURE, store=store, settings=get_settings(), qps=5, p95_ms=200)
    prices.write_text("price_gpu_hour: 1\nprice_cpu_core_hour: 1\n")
    plan = plan_capacity(FEATURE, store=store, settings=get_settings(), qps=5, p95_ms=200)
    assert plan.prices.cpu_core_hour == 1.0 and plan.prices.gpu_hour == 1.0
    with pytest.raises(NotFoundError, match="has no version 9; versions: 1"):
        plan_capacity(FEATURE, store=store, settings=settings, qps=5, p95_ms=200, versions=[9])


def test_the_command_prints_the_table_and_refuses_bad_input_in_one_line(
    store: Store, tmp_path: Path, capsys, monkeypatch
) -> None:
    from aiflywheel.cli import main

    build_champion(store, tmp_path)
    assert main(["plan", FEATURE, "--qps", "50", "--p95-ms", "200"]) == 0
    out = capsys.readouterr().out
    assert "llm-api" in out and "not measured: run `flywheel plan FEATURE --measure`" in out
    assert main(["plan", FEATURE, "--qps", "0"]) == 2
    err = capsys.readouterr().err
    assert "qps must be a positive number, got 0.0" in err and "Traceback" not in err
    monkeypatch.setenv("FLYWHEEL_PRICE_LLM_PER_1K_TOKENS", "-0.5")
    assert main(["plan", FEATURE, "--json"]) == 2
    assert "price_llm_per_1k_tokens must be a positive number" in capsys.readouterr().err
