"""capplan estimate against real processes with known sizes, through the real /proc.

The demo workload's parent writes S bytes before fork; each worker writes P private bytes
and a fraction f of the inherited heap. An idle worker (P = 0, f = 0) still costs a
baseline: the interpreter's own copy-on-write pages, page tables, kernel stack and slab.
We measure that baseline first, on the same host, then check the per-worker cost against
P + f*S + baseline.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import MiB, estimate_json, run_cli, start_demo


@pytest.fixture(scope="module")
def idle_baseline() -> int:
    with start_demo("--shared", "32M", "--private", "0", "--workers", "4") as w:
        return estimate_json(w.parent)["model"]["per_instance_bytes"]


@pytest.mark.parametrize(("private_mib", "dirty"), [(24, 0.0), (8, 0.25)])
def test_per_worker_matches_known_private_size(
    idle_baseline: int, private_mib: int, dirty: float
) -> None:
    shared = 32 * MiB
    with start_demo(
        "--shared", "32M", "--private", f"{private_mib}M", "--workers", "5", "--dirty", str(dirty)
    ) as w:
        doc = estimate_json(w.parent)
    expected = private_mib * MiB + dirty * shared + idle_baseline
    per_worker = doc["model"]["per_instance_bytes"]
    assert per_worker == pytest.approx(expected, rel=0.05)
    # The fixed cost holds the shared heap, counted once (minus what workers made private).
    assert doc["model"]["fixed_bytes"] >= shared * (1 - dirty)
    low, high = doc["model"]["per_instance_ci95"]
    assert low <= per_worker <= high


def test_json_document_has_the_documented_keys() -> None:
    with start_demo("--shared", "8M", "--private", "4M", "--workers", "3") as w:
        doc = estimate_json(w.parent)
        assert set(doc["workload"]["pids"]) == {w.parent, *w.workers}
        assert doc["workload"]["parent_pids"] == [w.parent]
        assert doc["workload"]["worker_count"] == 3
    assert doc["workload"]["selector"] == f"--pid {w.parent}"
    for key in ("fixed_bytes", "per_instance_bytes", "per_instance_ci95", "r2", "method"):
        assert key in doc["model"]
    for key in ("total_bytes", "reserve_bytes", "available_bytes", "source"):
        assert key in doc["budget"]
    assert isinstance(doc["prediction"]["max_instances"], int)
    assert isinstance(doc["prediction"]["max_instances_conservative"], int)
    assert {"largest_rss", "rss_minus_shr", "pss", "capplan"} <= set(doc["estimators"])
    for result in doc["estimators"].values():
        assert {"per_instance_bytes", "max_instances"} <= set(result)
    for key in ("kernel", "thp_enabled", "capplan_version", "time"):
        assert key in doc["environment"]
    assert len(doc["samples"]) == 3
    assert len(doc["timing"]["sample_read_seconds"]) == 3
    process = doc["samples"][0]["processes"][0]
    for key in (
        "rss_bytes",
        "pss_bytes",
        "shared_clean_bytes",
        "private_dirty_bytes",
        "swap_bytes",
    ):
        assert isinstance(process["rollup"][key], int)
    assert process["page_tables_bytes"] > 0


def test_budget_arithmetic_is_consistent() -> None:
    with start_demo("--shared", "8M", "--private", "2M", "--workers", "3") as w:
        doc = estimate_json(w.parent, "--memory", "4G", "--reserve", "512M")
    budget, model, prediction = doc["budget"], doc["model"], doc["prediction"]
    assert budget["total_bytes"] == 4 * 1024 * MiB
    assert budget["reserve_bytes"] == 512 * MiB
    assert budget["available_bytes"] == budget["total_bytes"] - budget["reserve_bytes"]
    room = budget["available_bytes"] - model["fixed_bytes"]
    assert prediction["max_instances"] == room // model["per_instance_bytes"]
    assert prediction["max_instances_conservative"] <= prediction["max_instances"]


def test_usual_rules_err_the_documented_way() -> None:
    """ΣRSS-style rules under-size a forked pool; USS-only over-sizes it."""
    with start_demo("--shared", "48M", "--private", "2M", "--workers", "4") as w:
        doc = estimate_json(w.parent)
    n = {name: r["max_instances"] for name, r in doc["estimators"].items()}
    assert n["largest_rss"] < n["pss"] < n["capplan"]
    assert n["rss_minus_shr"] < n["capplan"]
    assert n["uss"] > n["capplan"]  # USS leaves out the kernel memory each worker costs


def test_demo_runs_and_leaves_nothing_behind() -> None:
    result = run_cli(
        "estimate", "--demo", "--samples", "2", "--interval", "0.2", "--format", "json"
    )
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["workload"]["worker_count"] == 4
    assert doc["prediction"]["max_instances"] > 0
    # Every process the demo ran is gone once capplan has exited.
    leftover = [pid for pid in doc["workload"]["pids"] if os.path.exists(f"/proc/{pid}")]
    assert leftover == []


def test_demo_text_output_reads_at_a_glance() -> None:
    result = run_cli("estimate", "--demo", "--samples", "2", "--interval", "0.2")
    assert result.code == 0, result.stderr
    for needle in (
        "Per worker (marginal):",
        "Fixed (paid once):",
        "Budget arithmetic",
        "room / per worker",
        "Max workers:",
        "conservative (95%)",
        "largest_rss",
    ):
        assert needle in result.stdout


def test_workers_address_regions_are_read() -> None:
    """Each worker's address space splits into a few regions (program, heap, mmap area,
    stack): the conservative prediction allows one page-table page more for each."""
    with start_demo("--shared", "8M", "--private", "1M", "--workers", "3") as w:
        doc = estimate_json(w.parent)
    workers = [p for p in doc["samples"][-1]["processes"] if p["role"] == "worker"]
    assert all(3 <= p["address_regions"] <= 12 for p in workers)
    mean = sum(p["address_regions"] for p in workers) / len(workers)
    assert doc["model"]["layout_allowance_bytes"] == round(mean * os.sysconf("SC_PAGE_SIZE"))
