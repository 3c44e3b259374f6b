"""Cost and capacity: what serving each version costs, and what it takes to serve a load.

``plan_capacity(feature, store=..., settings=..., qps=50, p95_ms=200)`` gives one row per
version (and an LLM API row) with:

- serving figures: requests per second per core, p95 latency of one request (batch 1),
  memory and size. Where they come from is the row's ``source``:
  ``flywheel plan --measure`` (``measure_version``: the version timed in a fresh process
  pinned to one CPU core and one thread, written to ``serving_benchmark.json`` beside its
  folder; memory is that process's peak resident set: runtime plus model), else the
  compress results (``metrics["compression"]`` of a variant, and the parent's figures of
  the compress run that timed it; texts/s at batch 32 over the threads the run timed
  with), else none (the row says to measure);
- cost per 1,000 requests at full use of a core: ``core-hour price / 3600 / req_per_s``
  x 1000;
- cores for the target QPS: ``ceil(qps / req_per_s_per_core)``, and ``meets_p95``
  whether one request alone answers within the target p95 (more cores add throughput,
  not speed); GPUs: the cores divided by the assumed ``gpu_speedup`` (shown);
- monthly cost: cores x core-hour price x 730 hours;
- retrain cost: the wall time of the run that trained the version x the cores of this
  machine x the core-hour price;
- the LLM API row: ``llm_tokens_per_request`` (an assumption, shown) x the price per
  1k tokens.

Prices come from settings (``FLYWHEEL_PRICE_*`` or ``FLYWHEEL_PRICES_FILE``); a
non-positive QPS, p95 or price is refused with a one-line error naming the field.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aiflywheel.errors import DataError, NotFoundError, SettingsError
from aiflywheel.store import Store

HOURS_PER_MONTH = 730.0
BENCHMARK_FILE = "serving_benchmark.json"
PRICE_KEYS = (
    "price_cpu_core_hour",
    "price_gpu_hour",
    "price_llm_per_1k_tokens",
    "llm_tokens_per_request",
    "gpu_speedup",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prices(_Model):
    cpu_core_hour: float = Field(description="Price of one CPU core for an hour.")
    gpu_hour: float = Field(description="Price of one GPU for an hour.")
    llm_per_1k_tokens: float = Field(description="LLM API price per 1,000 tokens.")


class PlanRow(_Model):
    version: int | None = Field(description="The model version (None: the LLM API row).")
    variant: str = Field(description="torch, tfidf, int8, distill, ... or llm-api.")
    req_per_s_per_core: float | None
    p95_ms: float | None = Field(description="p95 latency of one request alone.")
    memory_mb: float | None
    size_mb: float | None
    cost_per_1k_requests: float | None
    cores_needed: int | None
    gpus_needed: int | None
    monthly_cost: float | None
    retrain_cost: float | None
    meets_p95: bool | None = Field(description="None when the p95 is not known.")
    source: str = Field(description="Where the serving figures came from.")


class CapacityPlan(_Model):
    feature: str
    qps: float
    p95_ms: float
    prices: Prices
    rows: list[PlanRow]
    assumptions: dict[str, Any] = Field(description="Figures assumed rather than measured.")


# -- prices ----------------------------------------------------------------------------------


def price_table(settings) -> dict[str, float]:
    """The price table: settings, overridden by ``settings.prices_file`` (YAML or JSON)."""
    table = {key: getattr(settings, key) for key in PRICE_KEYS}
    path = getattr(settings, "prices_file", None)
    if path is not None:
        import yaml

        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise SettingsError(f"FLYWHEEL_PRICES_FILE {str(path)!r}: {reason}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"FLYWHEEL_PRICES_FILE {str(path)!r}: expected a mapping")
        unknown = sorted(set(loaded) - set(PRICE_KEYS))
        if unknown:
            raise SettingsError(
                f"FLYWHEEL_PRICES_FILE {str(path)!r}: unknown key {unknown[0]!r} "
                f"(keys: {', '.join(PRICE_KEYS)})"
            )
        table.update(loaded)
    for key in PRICE_KEYS:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise SettingsError(
                f"{key} must be a positive number (FLYWHEEL_{key.upper()}), got {value!r}"
            )
    return {key: float(value) for key, value in table.items()}


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise DataError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise DataError(f"{name} must be a finite number, got {value!r}")
    return float(value)


# -- serving figures -------------------------------------------------------------------------


def _compress_table(model_path: Path) -> dict[str, Any] | None:
    """compression.json of the compress run a variant's folder belongs to."""
    path = model_path.parent.parent / "compression.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def _figures_from_compression(figures: dict[str, Any], threads: int) -> dict[str, Any]:
    return {
        "req_per_s_per_core": float(figures["throughput_per_s"]) / max(1, threads),
        "p95_ms": float(figures["latency_ms"]["batch_1"]["p95"]),
        "size_mb": float(figures["size_mb"]),
        "memory_mb": None,
    }


def serving_figures(row, versions: Sequence) -> tuple[dict[str, Any] | None, str]:
    """(figures, where they came from) of a registered version (see the module doc)."""
    model_path = Path(row.model_path)
    bench = model_path.parent / BENCHMARK_FILE
    if bench.is_file():
        data = json.loads(bench.read_text(encoding="utf-8"))
        if data.get("model_path") == str(model_path):
            return data["figures"], f"flywheel plan --measure, {data['measured_at']} (1 core)"
    compression = (row.metrics or {}).get("compression")
    if compression and "throughput_per_s" in compression:
        table = _compress_table(model_path) or {}
        threads = int((table.get("machine") or {}).get("threads") or 1)
        return (
            _figures_from_compression(compression, threads),
            f"flywheel compress results ({threads} threads, batch 32 texts/s ÷ threads)",
        )
    for other in versions:  # a compress run whose parent is this version timed it too
        c = (other.metrics or {}).get("compression") or {}
        if c.get("parent_version") == row.version and c.get("parent"):
            table = _compress_table(Path(other.model_path)) or {}
            threads = int((table.get("machine") or {}).get("threads") or 1)
            return (
                _figures_from_compression(c["parent"], threads),
                f"flywheel compress results, as parent of v{other.version} ({threads} threads)",
            )
    return None, "not measured: run `flywheel plan FEATURE --measure`"


def _variant(row) -> str:
    compression = (row.metrics or {}).get("compression") or {}
    if compression.get("variant"):
        return str(compression["variant"])
    if row.base_model == "tfidf":
        return "tfidf"
    return "torch" if row.method in ("finetune", "head", "lora") else row.method


def _time_in_child(task_name: str, model_path: str, feature: str, version: int, sample, seed, out):
    """In a fresh process pinned to one core: load the version, time it, report its peak
    resident memory (what serving it takes: runtime and model)."""
    try:
        os.environ["OMP_NUM_THREADS"] = "1"
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import resource

        from aiflywheel.compress.measure import measure
        from aiflywheel.core.registry import get_task

        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            pass
        predictor = get_task(task_name).load_predictor(model_path, feature=feature, version=version)
        if not hasattr(predictor, "predict_proba"):
            out.put(
                (
                    "DataError",
                    f"{feature} v{version} answers conversations, not batches of "
                    "texts; --measure times classifiers",
                )
            )
            return
        result = measure(predictor, sample, model_dir=model_path, seed=seed).to_json()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.put(("ok", result, peak_kb / 1024))
    except Exception as exc:  # reported to the parent as one line
        out.put((type(exc).__name__, str(exc).splitlines()[0] if str(exc) else repr(exc)))


def measure_version(
    feature: str,
    version: int,
    *,
    store: Store,
    texts: int = 64,
    seed: int = 0,
    timeout_s: float = 900,
) -> dict[str, Any]:
    """Time ``version`` in a fresh process pinned to one CPU core (one thread) on texts of
    its own data (held-out rows, else training rows): latency at batch 1 and 32, texts/s
    at batch 32, peak resident memory; write ``serving_benchmark.json`` beside its folder."""
    import multiprocessing
    import queue as queue_module

    from aiflywheel.core.registry import get_task
    from aiflywheel.errors import ModelError
    from aiflywheel.files import write_json_atomic
    from aiflywheel.monitoring.drift import feature_recipe

    _, task_name = feature_recipe(store, feature)
    row = store.get_model_version(feature, version)
    task = get_task(task_name)
    reference = task.drift_reference(
        row.model_path, feature=feature, store=store, limit=texts, seed=seed, with_outputs=False
    )
    sample = (reference.heldout_texts or reference.texts)[:texts]
    if not sample:
        raise DataError(f"{feature} v{version}: no texts of its data to time it on")
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(
        target=_time_in_child,
        args=(task_name, str(row.model_path), feature, version, sample, seed, out),
        daemon=True,
    )
    child.start()
    try:
        answer = out.get(timeout=timeout_s)
    except queue_module.Empty:
        child.kill()
        raise ModelError(f"timing {feature} v{version} took over {timeout_s:.0f} s") from None
    finally:
        child.join(10)
    if answer[0] != "ok":
        error = DataError if answer[0] == "DataError" else ModelError
        raise error(f"{feature} v{version} could not be timed: {answer[0]}: {answer[1]}")
    _, result, peak_mb = answer
    figures = {
        "req_per_s_per_core": float(result["throughput_per_s"]),
        "p95_ms": float(result["latency_ms"]["batch_1"]["p95"]),
        "size_mb": float(result["size_mb"]),
        "memory_mb": round(float(peak_mb), 1),
    }
    data = {
        "model_path": str(row.model_path),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pinned_to_one_core": hasattr(os, "sched_setaffinity"),
        "texts": len(sample),
        "figures": figures,
        "raw": result,
    }
    write_json_atomic(Path(row.model_path).parent / BENCHMARK_FILE, data)
    return data


def _retrain_seconds(store: Store, run_id: str | None) -> float | None:
    if run_id is None:
        return None
    from aiflywheel.store import Run

    with store.session() as session:
        run = session.get(Run, run_id)
    if run is None or run.finished_at is None or run.started_at is None:
        return None
    return max(0.0, (run.finished_at - run.started_at).total_seconds())


def plan_capacity(
    feature: str,
    *,
    store: Store,
    settings,
    qps: float,
    p95_ms: float,
    versions: list[int] | None = None,
) -> CapacityPlan:
    """Cost and capacity of ``feature``'s versions (all, or ``versions``) for ``qps``
    requests per second within ``p95_ms``; see the module docstring."""
    from aiflywheel.monitoring.drift import feature_recipe
    from aiflywheel.tasks.text_classification.models.onnx_classifier import available_cores

    qps = _positive("qps", qps)
    p95_ms = _positive("p95_ms", p95_ms)
    prices = price_table(settings)
    feature_recipe(store, feature)  # unknown feature -> NotFoundError
    all_rows = [row for row, _ in store.list_model_versions(feature)]
    known = {row.version for row in all_rows}
    for number in versions or []:
        if number not in known:
            raise NotFoundError(
                f"feature {feature!r} has no version {number}; versions: "
                f"{', '.join(map(str, sorted(known))) or 'none'}"
            )
    chosen = [r for r in all_rows if versions is None or r.version in versions]
    core_hour, speedup = prices["price_cpu_core_hour"], prices["gpu_speedup"]
    cores_here = available_cores()
    rows = []
    for row in sorted(chosen, key=lambda r: r.version):
        figures, source = serving_figures(row, all_rows)
        seconds = _retrain_seconds(store, row.run_id)
        retrain = round(seconds / 3600 * cores_here * core_hour, 6) if seconds is not None else None
        if seconds is not None:
            source += f"; retrain: {seconds:.0f} s run × {cores_here} cores"
        if figures is None or not figures.get("req_per_s_per_core"):
            rows.append(
                PlanRow(
                    version=row.version,
                    variant=_variant(row),
                    req_per_s_per_core=None,
                    p95_ms=None,
                    memory_mb=None,
                    size_mb=None,
                    cost_per_1k_requests=None,
                    cores_needed=None,
                    gpus_needed=None,
                    monthly_cost=None,
                    retrain_cost=retrain,
                    meets_p95=None,
                    source=source,
                )
            )
            continue
        rate = float(figures["req_per_s_per_core"])
        cores = max(1, math.ceil(qps / rate))
        rows.append(
            PlanRow(
                version=row.version,
                variant=_variant(row),
                req_per_s_per_core=round(rate, 2),
                p95_ms=round(float(figures["p95_ms"]), 3),
                memory_mb=figures.get("memory_mb"),
                size_mb=figures.get("size_mb"),
                cost_per_1k_requests=core_hour / 3600 / rate * 1000,
                cores_needed=cores,
                gpus_needed=max(1, math.ceil(cores / speedup)),
                monthly_cost=round(cores * core_hour * HOURS_PER_MONTH, 2),
                retrain_cost=retrain,
                meets_p95=float(figures["p95_ms"]) <= p95_ms,
                source=source,
            )
        )
    tokens = prices["llm_tokens_per_request"]
    per_1k = tokens * prices["price_llm_per_1k_tokens"]  # 1,000 requests x tokens / 1,000
    rows.append(
        PlanRow(
            version=None,
            variant="llm-api",
            req_per_s_per_core=None,
            p95_ms=None,
            memory_mb=None,
            size_mb=None,
            cost_per_1k_requests=round(per_1k, 6),
            cores_needed=None,
            gpus_needed=None,
            monthly_cost=round(qps * 3600 * HOURS_PER_MONTH / 1000 * per_1k, 2),
            retrain_cost=None,
            meets_p95=None,
            source=f"assumed {tokens:.0f} tokens per request (FLYWHEEL_LLM_TOKENS_PER_REQUEST) "
            f"× {prices['price_llm_per_1k_tokens']} per 1k tokens",
        )
    )
    return CapacityPlan(
        feature=feature,
        qps=qps,
        p95_ms=p95_ms,
        prices=Prices(
            cpu_core_hour=core_hour,
            gpu_hour=prices["price_gpu_hour"],
            llm_per_1k_tokens=prices["price_llm_per_1k_tokens"],
        ),
        rows=rows,
        assumptions={
            "hours_per_month": HOURS_PER_MONTH,
            "gpu_speedup_cores_per_gpu": speedup,
            "llm_tokens_per_request": tokens,
            "retrain_cores": cores_here,
            "cost_per_1k_requests": "at full use of each core",
        },
    )


__all__ = ["CapacityPlan", "PlanRow", "Prices", "measure_version", "plan_capacity", "price_table"]
