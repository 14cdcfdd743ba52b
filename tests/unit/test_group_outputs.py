"""The answer for several groups in every output format (issue 13): the host plan in
``--format json``, OpenMetrics gauges per group and for busy or idle, and the Markdown/HTML
report's section per group and plan.

The records are real: ``capplan estimate --root`` on the captured roles-host (php-fpm with
pools site1 and site2 of one master, captured at one moment), and the committed demo model
for one group. Each renderer is checked against the records it rendered, never against a
figure written here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO, run_cli

from capacity import modelfile
from capacity.codec import to_jsonable
from capacity.model.plan import plan_groups, shared_once
from capacity.records import Activity, Budget, Estimate, GroupEstimate
from capacity.render import document, openmetrics
from capacity.render.report import render_json, render_text

ROOT = FIXTURES / "hosts" / "roles-host"
HOSTILE = '<script>alert("x")</script>\\ \n|*_'


def captured(tmp: Path, name: str) -> Estimate:
    """``capplan estimate --root`` on the captured host, as it saves the model."""
    saved = tmp / "m.json"
    result = run_cli(
        "estimate", "--root", str(ROOT), "--cmd", name, "--samples", "1", "--save", str(saved),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return modelfile.load_estimate(saved)


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> Estimate:
    """php-fpm's two pools of one master."""
    estimate = captured(tmp_path_factory.mktemp("pools"), "php-fpm8.2")
    assert [(g.server, g.pool) for g in estimate.groups] == [
        ("php-fpm", "site1"),
        ("php-fpm", "site2"),
    ]
    return estimate


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Estimate:
    """PostgreSQL: one group."""
    estimate = captured(tmp_path_factory.mktemp("one"), "postgres")
    assert len(estimate.groups) == 1
    return estimate


def with_groups(estimate: Estimate, change: Any) -> Estimate:
    return dataclasses.replace(estimate, groups=tuple(change(g) for g in estimate.groups))


# --------------------------------------------------------------------------- JSON


def test_json_holds_the_plan_the_text_prints(pools: Estimate) -> None:
    doc = json.loads(render_json(pools))
    plan = doc["plan"]
    assert doc["plan_error"] is None
    assert plan == to_jsonable(plan_groups(pools))
    assert plan["kind"] == "capplan.plan"
    groups = doc["groups"]
    assert [p["name"] for p in plan["pools"]] == [g.label for g in pools.groups]
    less = shared_once(pools)
    assert sorted(less) == [1]  # the master both pools share, paid once
    for i, (pool, group) in enumerate(zip(plan["pools"], groups, strict=True)):
        # Each pool's fixed cost and per-worker cost are its group's own fit (the shared
        # master taken off all but the first).
        assert pool["fixed_bytes"] == group["model"]["fixed_bytes"] - less.get(i, 0)
        assert pool["per_instance_bytes"] == group["model"]["per_instance_bytes"]
        assert pool["weight"] == group["worker_count"]  # the ratio: the counts measured
        conservative = pool["max_instances_conservative"]
        assert pool["suggestion"]["lines"] == [f"pm.max_children = {conservative}"]
    point, bound = plan["point"], plan["conservative"]
    # Every fixed cost once, and each pool's workers: the point answer fits, the 95 %
    # bound of the sum fits its limit, and the counts add up.
    assert point["memory_bytes"] == sum(
        p["fixed_bytes"] + p["max_instances"] * p["per_instance_bytes"] for p in plan["pools"]
    )
    assert point["memory_bytes"] <= point["limit_bytes"] == plan["available_bytes"]
    assert point["workers"] == sum(p["max_instances"] for p in plan["pools"])
    assert bound["workers"] == sum(p["max_instances_conservative"] for p in plan["pools"])
    assert (
        bound["high_bytes"] <= bound["limit_bytes"] and bound["high_bytes"] > bound["memory_bytes"]
    )
    # The text prints the same totals.
    text = render_text(pools)
    assert f"Max workers: {point['workers']:,}, using" in text
    assert f"Conservative (95%): {bound['workers']:,}, whose total" in text


def test_the_plan_is_derived_not_stored(pools: Estimate, tmp_path: Path) -> None:
    """The model file has no plan; the JSON output reads back as the same model (the
    loader ignores ``plan``), so ``capplan report`` derives the same plan again."""
    saved = tmp_path / "m.json"
    modelfile.save_estimate(saved, pools)
    assert "plan" not in json.loads(saved.read_text())
    doc = json.loads(render_json(pools))
    assert modelfile.estimate_from_dict(doc) == pools
    again = run_cli("report", str(saved), "--format", "json")
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["plan"] == doc["plan"]


def test_one_group_and_a_file_saved_before_groups_have_no_plan(one: Estimate) -> None:
    before_groups = modelfile.load_estimate(REPO / "models" / "demo.json")
    for estimate in (one, before_groups):
        doc = json.loads(render_json(estimate))
        assert len(doc["groups"]) == len(estimate.groups) <= 1
        assert doc["plan"] is None and doc["plan_error"] is None


def test_groups_whose_fixed_costs_do_not_fit_say_why_there_is_no_plan(pools: Estimate) -> None:
    fixed = sum(g.model.fixed_bytes for g in pools.groups)
    small = Budget(
        total_bytes=fixed // 2,
        reserve_bytes=0,
        available_bytes=fixed // 2,
        source="--memory",
        reserve_source="--reserve 0",
    )
    squeezed = with_groups(pools, lambda g: dataclasses.replace(g, budget=small))
    doc = json.loads(render_json(squeezed))
    assert doc["plan"] is None
    assert doc["plan_error"].startswith("the pools' fixed costs need")
    assert f"Plan for this host: none: {doc['plan_error']}" in render_text(squeezed)


# --------------------------------------------------------------------------- OpenMetrics


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in parser.text_string_to_metric_families(text)
    }


def group_labels(estimate: Estimate, g: GroupEstimate) -> dict[str, str]:
    return {
        "host": estimate.environment.hostname,
        "server": g.server,
        "pool": g.pool or "",
        "instance": "" if g.instance is None else str(g.instance),
        "worker_role": g.worker_role,
    }


def test_openmetrics_has_gauges_per_group(pools: Estimate) -> None:
    text = openmetrics.render_openmetrics(pools)
    parsed = families(text)
    expected = [group_labels(pools, g) for g in pools.groups]
    for name, value in (
        ("capplan_group_worker_memory_bytes", lambda g: g.model.per_instance_bytes),
        ("capplan_group_fixed_memory_bytes", lambda g: g.model.fixed_bytes),
        ("capplan_group_workers_measured", lambda g: g.worker_count),
    ):
        assert parsed[name] == [
            (labels, value(g)) for labels, g in zip(expected, pools.groups, strict=True)
        ]
    by_estimate = {
        (labels["pool"], labels["estimate"]): v for labels, v in parsed["capplan_group_max_workers"]
    }
    assert by_estimate == {
        key: value
        for g in pools.groups
        for key, value in (
            ((g.pool, "point"), g.prediction.max_instances),
            ((g.pool, "conservative"), g.prediction.max_instances_conservative),
        )
    }
    # The top level's gauges keep their names and labels.
    top = {"workload": pools.workload.name, "host": pools.environment.hostname}
    assert parsed["capplan_worker_memory_bytes"] == [(top, pools.model.per_instance_bytes)]
    # node_exporter's textfile collector reads the Prometheus text format: it parses too.
    text_parser = pytest.importorskip("prometheus_client.parser")
    names = {f.name for f in text_parser.text_string_to_metric_families(text)}
    assert {"capplan_group_max_workers", "capplan_activity_state"} <= names


def test_openmetrics_activity_gauges_per_group_and_top_level(pools: Estimate) -> None:
    busy = Activity(state="busy", workers=3, busy_workers=2, duration_seconds=4.0,
                    cpu_seconds=1.5, cpu_per_worker=0.125, busiest_cpu=0.25,
                    context_switches=600, switches_per_second=150.0, switches_per_worker=50.0)  # fmt: skip
    idle = Activity(state="idle", workers=5, duration_seconds=4.0)
    marked = with_groups(
        pools, lambda g: dataclasses.replace(g, activity=busy if g.pool == "site1" else idle)
    )
    marked = dataclasses.replace(marked, activity=idle)
    # The text's section of each group says it too.
    text = render_text(marked)
    assert "    Activity: busy: 2 of 3 workers ran in the 4.0 s" in text
    assert "    Activity: measured idle: the 5 workers did not run" in text
    parsed = families(openmetrics.render_openmetrics(marked))
    states = {
        (labels["pool"], labels["state"]): v for labels, v in parsed["capplan_group_activity_state"]
    }
    assert states == {
        ("site1", "idle"): 0, ("site1", "busy"): 1, ("site1", "unknown"): 0,
        ("site2", "idle"): 1, ("site2", "busy"): 0, ("site2", "unknown"): 0,
    }  # fmt: skip
    for name, field in (
        ("capplan_group_activity_workers", "workers"),
        ("capplan_group_activity_busy_workers", "busy_workers"),
        ("capplan_group_activity_cpu_per_worker", "cpu_per_worker"),
        ("capplan_group_activity_context_switches_per_second", "switches_per_second"),
        ("capplan_group_activity_window_seconds", "duration_seconds"),
    ):
        assert {labels["pool"]: v for labels, v in parsed[name]} == {
            g.pool: getattr(g.activity, field) for g in marked.groups
        }
    top = {"workload": pools.workload.name, "host": pools.environment.hostname}
    assert sorted(parsed["capplan_activity_state"], key=lambda s: s[0]["state"]) == [
        ({**top, "state": "busy"}, 0),
        ({**top, "state": "idle"}, 1),
        ({**top, "state": "unknown"}, 0),
    ]


def test_openmetrics_group_labels_are_escaped(pools: Estimate) -> None:
    hostile = with_groups(pools, lambda g: dataclasses.replace(g, pool=HOSTILE + (g.pool or "")))
    parsed = families(openmetrics.render_openmetrics(hostile))
    pools_seen = [labels["pool"] for labels, _ in parsed["capplan_group_fixed_memory_bytes"]]
    # Quotes, backslashes and the newline escaped and read back exactly.
    assert pools_seen == [HOSTILE + "site1", HOSTILE + "site2"]


# --------------------------------------------------------------------------- Markdown, HTML


def test_report_has_a_section_per_group_and_the_plan(pools: Estimate) -> None:
    text, _ = document.render(pools, "markdown", source="php.json", png_name=None)
    plan = plan_groups(pools)
    assert plan is not None
    for number, g in enumerate(pools.groups, 1):
        assert f"### Group {number} of 2: {g.label}" in text
        assert f"pm.max\\_children = {g.prediction.max_instances_conservative}" in text
    assert "### Plan for this host, every group together" in text
    for pool in plan.pools:
        assert f"| {pool.name} |" in text
        assert f"| {pool.max_instances_conservative:,} | pm.max\\_children =" in text
    assert f"Conservative: {plan.conservative.workers:,}, whose total" in text
    assert f"Max workers together: {plan.point.workers:,}," in text


def test_one_group_has_no_group_sections(one: Estimate) -> None:
    text, _ = document.render(one, "markdown", source="demo.json", png_name=None)
    assert "### Group 1" not in text and "Plan for this host" not in text


def test_group_sections_escape_host_text(pools: Estimate) -> None:
    hostile = with_groups(pools, lambda g: dataclasses.replace(g, pool=HOSTILE + (g.pool or "")))
    markdown, _ = document.render(hostile, "markdown", source="php.json", png_name=None)
    page, _ = document.render(hostile, "html", source="php.json", png_name=None)
    assert "<script>" not in markdown and "<script>alert" not in page
    assert "&lt;script&gt;alert" in page
