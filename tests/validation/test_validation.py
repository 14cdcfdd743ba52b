"""capplan's predicted maximum against the true maximum, on the reduced set CI runs.

scripts/validate.py finds the largest worker count that runs under load in a memory cgroup
with a hard limit before the cgroup's OOM killer fires, then runs capplan on the same
workload without the limit, told that the budget is the limit. The goals (README,
reports/validation.md): the point prediction within 5 % of the true maximum, and the
conservative prediction never above it. The full run (all workloads, three repeats) is
the script itself; this is one repeat of the ``quick`` workloads.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

import pytest
from conftest import REPO, is_root

from capacity.testing import servers, servers_more

pytestmark = pytest.mark.skipif(
    not is_root(), reason="needs root: OOM experiments run in memory cgroups of their own"
)


def load_validate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate", REPO / "scripts" / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["validate"] = module
    spec.loader.exec_module(module)
    return module


validate = load_validate()
QUICK = [w for w in validate.WORKLOADS if w.quick]


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    needed: list[Any] = [servers.ab_binary]
    if any(w.kind in ("apache2", "php-fpm") for w in QUICK):
        needed.append(servers.apache2_binary)
    if any(w.kind == "php-fpm" for w in QUICK):
        needed.append(servers.php_fpm_binary)
    if any(w.kind == "nginx" for w in QUICK):
        needed.append(servers_more.nginx_binary)
    for check in needed:
        try:
            check()
        except servers.ServerUnavailable as missing:
            pytest.skip(str(missing))
    found = validate.validate(QUICK, repeats=1, samples=5, interval=0.5)
    return {r["name"]: r for r in found}


@pytest.mark.parametrize("name", [w.name for w in QUICK])
def test_point_prediction_within_5_percent_of_the_true_maximum(
    results: dict[str, dict[str, Any]], name: str
) -> None:
    result = results[name]
    truth, point = result["truth"]["median"], result["capplan"]["point"]
    assert abs(point - truth) <= 0.05 * truth, f"{name}: capplan {point}, true maximum {truth}"


@pytest.mark.parametrize("name", [w.name for w in QUICK])
def test_conservative_prediction_is_never_above_the_true_maximum(
    results: dict[str, dict[str, Any]], name: str
) -> None:
    result = results[name]
    truth, conservative = result["truth"]["min"], result["capplan"]["conservative"]
    assert 0 < conservative <= truth, f"{name}: conservative {conservative}, true {truth}"


@pytest.mark.parametrize("name", [w.name for w in QUICK])
def test_the_usual_rules_err_the_documented_way(
    results: dict[str, dict[str, Any]], name: str
) -> None:
    """Largest RSS counts shared pages once per worker; USS leaves out kernel memory."""
    result = results[name]
    truth, usual = result["truth"]["median"], result["usual"]
    assert usual["largest_rss"]["max"] < 0.5 * truth
    assert usual["uss"]["max"] > truth


def test_the_report_says_which_goals_are_met(results: dict[str, dict[str, Any]]) -> None:
    meta = {
        "command": "pytest tests/test_validation.py",
        "date": "today",
        "kernel": "k",
        "machine": "m",
        "cgroup": "v1",
        "capplan": "0",
        "repeats": 1,
        "json": "validation.json",
    }
    text = validate.render_markdown(list(results.values()), meta)
    for name, result in results.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} "))
        assert str(result["capplan"]["point"]) in row
        assert ("MISS" in row) != all(result["goals"].values())


def test_the_committed_report_renders_every_row_from_its_figures() -> None:
    """reports/validation.md is what render_report makes of the committed JSON; both tables
    take their shared cells from ``_cells``, and a row without the usual rules (php-fpm with
    a pool per site: they answer for the whole selection) shows "-" for each."""
    reports = REPO / "reports"
    text = validate.render_report(reports / "validation.json", reports / "validation-guest.json")
    assert text == (reports / "validation.md").read_text()
    for name in ("validation.json", "validation-guest.json"):
        path = reports / name
        if not path.exists():
            continue
        for result in json.loads(path.read_text())["results"]:
            row = next(
                line for line in text.splitlines() if line.startswith(f"| {result['name']} ")
            )
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            shared = validate._cells(result)
            start = cells.index(shared[0])
            assert cells[start : start + len(shared)] == shared
            if name == "validation.json" and result["usual"] is None:
                assert cells[start + len(shared) :] == ["-"] * len(validate.USUAL_RULES)
