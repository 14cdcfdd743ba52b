"""The usual sizing rules on the saved demo model: each figure against arithmetic done here
from the model file's raw JSON fields."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import pytest
from conftest import REPO

from capacity.model.estimators import NOTES, compare
from capacity.modelfile import load_estimate

MODEL = REPO / "models/demo.json"


@pytest.fixture(scope="module")
def estimate():
    return load_estimate(MODEL)


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(MODEL.read_text())


def _workers(raw: dict) -> list[dict]:
    return [p for s in raw["samples"] for p in s["processes"] if p["role"] == "worker"]


def _expected(raw: dict) -> dict[str, float]:
    workers = _workers(raw)
    return {
        "largest_rss": max(w["rollup"]["rss_bytes"] for w in workers),
        "rss_minus_shr": statistics.fmean(
            w["rollup"]["rss_bytes"] - w["rss_file_bytes"] - w["rss_shmem_bytes"] for w in workers
        ),
        "pss": statistics.fmean(w["rollup"]["pss_bytes"] for w in workers),
        "uss": statistics.fmean(
            w["rollup"]["private_clean_bytes"] + w["rollup"]["private_dirty_bytes"] for w in workers
        ),
    }


def test_demo_has_workers(raw) -> None:
    assert len(_workers(raw)) == 4 * len(raw["samples"]) == 20


def test_each_rule_is_ram_over_its_figure(estimate, raw) -> None:
    results = compare(estimate.samples, estimate.model, estimate.budget, estimate.prediction)
    available = raw["budget"]["available_bytes"]
    for name, figure in _expected(raw).items():
        got = results[name]
        assert got.per_instance_bytes == round(figure), name
        assert got.max_instances == math.floor(available / figure), name
        assert got.fixed_bytes == 0
        assert got.note == NOTES[name]


def test_known_figures_of_the_demo(estimate) -> None:
    results = compare(estimate.samples, estimate.model, estimate.budget, estimate.prediction)
    # RSS counts the 64 MiB shared once per worker; USS is the 16 MiB private plus a little.
    assert results["largest_rss"].per_instance_bytes == 94388224
    assert results["uss"].per_instance_bytes == 17374208
    assert results["largest_rss"].max_instances == 24767864790 // 94388224 == 262
    assert results["uss"].max_instances == 24767864790 // 17374208 == 1425
    # Ordering the notes claim: RSS-based rules under-size, USS over-sizes against capplan.
    capplan = results["capplan"].max_instances
    assert results["largest_rss"].max_instances < results["pss"].max_instances < capplan
    assert results["uss"].max_instances > capplan


def test_capplan_entry_is_the_model(estimate, raw) -> None:
    results = compare(estimate.samples, estimate.model, estimate.budget, estimate.prediction)
    capplan = results["capplan"]
    assert capplan.per_instance_bytes == raw["model"]["per_instance_bytes"] == 17683742
    assert capplan.fixed_bytes == raw["model"]["fixed_bytes"]
    assert capplan.max_instances == raw["prediction"]["max_instances"] == 1396
    assert capplan.note == NOTES["capplan"]


def test_matches_the_saved_comparison(estimate, raw) -> None:
    results = compare(estimate.samples, estimate.model, estimate.budget, estimate.prediction)
    assert set(results) == set(raw["estimators"]) == set(NOTES)
    for name, saved in raw["estimators"].items():
        assert results[name].per_instance_bytes == saved["per_instance_bytes"], name
        assert results[name].max_instances == saved["max_instances"], name


def test_smaller_budget(estimate) -> None:
    budget = dataclasses.replace(estimate.budget, available_bytes=1_000_000_000)
    results = compare(estimate.samples, estimate.model, budget, estimate.prediction)
    assert results["largest_rss"].max_instances == 1_000_000_000 // 94388224 == 10
    assert results["uss"].max_instances == 1_000_000_000 // 17374208 == 57


def test_budget_below_one_worker_fits_none(estimate) -> None:
    budget = dataclasses.replace(estimate.budget, available_bytes=1000)
    results = compare(estimate.samples, estimate.model, budget, estimate.prediction)
    for name in ("largest_rss", "rss_minus_shr", "pss", "uss"):
        assert results[name].max_instances == 0
    budget = dataclasses.replace(estimate.budget, available_bytes=-5)
    results = compare(estimate.samples, estimate.model, budget, estimate.prediction)
    assert results["uss"].max_instances == 0


def test_no_workers_no_comparison(estimate) -> None:
    parents_only = [
        dataclasses.replace(s, processes=s.parents) for s in estimate.samples
    ]  # fmt: skip
    assert compare(parents_only, estimate.model, estimate.budget, estimate.prediction) == {}
