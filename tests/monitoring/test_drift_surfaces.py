"""Drift on its surfaces: `flywheel drift` (exit codes, table, JSON) and the `/metrics`
gauges, which read stored reports and refresh stale ones in the background."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiflywheel.cli import main
from aiflywheel.monitoring.records import report_history
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.store import open_store
from analytics_world import FEATURE, build_champion, english, log_traffic, shifted


@pytest.fixture
def shifted_world(tmp_path: Path):
    store = open_store()
    model, version, _ = build_champion(store, tmp_path)
    rng = random.Random(2)
    log_traffic(store, model, version, [shifted(rng, i) for i in range(120)])
    return store


def test_the_command_shows_the_alarm_and_fails_only_when_asked(shifted_world, capsys) -> None:
    assert main(["drift", FEATURE]) == 0
    out = capsys.readouterr().out
    assert "DRIFT ALARM" in out and "language_mix" in out and "ALARM" in out
    assert main(["drift", FEATURE, "--fail-on-alarm"]) == 1
    capsys.readouterr()
    assert main(["drift", FEATURE, "--json", "--window", "60"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["window_rows"] == 60 and data["alarm"] and len(data["history"]) == 3
    assert main(["drift", "nope"]) == 2
    assert "unknown feature 'nope'" in capsys.readouterr().err


def test_calm_traffic_passes_fail_on_alarm(tmp_path: Path, capsys) -> None:
    store = open_store()
    model, version, _ = build_champion(store, tmp_path)
    rng = random.Random(9)
    log_traffic(store, model, version, [english(rng, i)[0] for i in range(100)])
    assert main(["drift", FEATURE, "--fail-on-alarm"]) == 0
    assert "no drift" in capsys.readouterr().out


def test_metrics_show_the_stored_report_and_refresh_a_stale_one(shifted_world) -> None:
    store = shifted_world
    with TestClient(create_app(ServeConfig(auth=False), store)) as api:
        first = api.get("/metrics").text  # no report yet: the scrape starts one
        assert "flywheel_drift_alarm{" not in first
        collector = api.app.state.metrics.drift
        collector.refreshing.join(60)
        assert len(report_history(store, FEATURE)) == 1
        text = api.get("/metrics").text
        assert f'flywheel_drift_alarm{{feature="{FEATURE}"}} 1.0' in text
        assert (
            f'flywheel_drift_check{{check="language_mix",feature="{FEATURE}",statistic="psi"}}'
            in text
        )
        assert 'flywheel_drift_worst{check="' in text
        age_gauge = [
            line for line in text.splitlines() if line.startswith("flywheel_drift_report_age")
        ]
        assert len(age_gauge) == 1 and f'feature="{FEATURE}"' in age_gauge[0]
        assert len(report_history(store, FEATURE)) == 1  # fresh: no second refresh
