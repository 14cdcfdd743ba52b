"""The answer for several groups in every output format, live (issue 13): ``capplan
estimate`` on a real php-fpm with two pools, ``--format json`` (the host plan beside
``groups``) and ``--format openmetrics`` (a gauge per group, checked against the model the
same run saved); and busy or idle in launch mode, where a load that misses the instances is
``LOAD_MISSED`` as in attach mode.

php-fpm runs from a temporary directory on unix sockets (capacity.testing.servers), never a
system instance; launch mode starts the demo in server mode on free loopback ports.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import is_root, run_cli

from capacity.testing import servers

pytestmark = pytest.mark.skipif(
    not is_root(), reason="needs root: php-fpm's children run as www-data, launch makes cgroups"
)

PY = shlex.quote(sys.executable)
SERVER = f"{PY} -m capacity.demo --port {{port}} --workers 0 --shared 0 --private 1M"


def need(*checks: Callable[[], object]) -> None:
    for check in checks:
        try:
            check()
        except servers.ServerUnavailable as missing:
            pytest.skip(str(missing))


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in parser.text_string_to_metric_families(text)
    }


def test_php_fpm_two_pools_plan_and_gauges_agree_with_groups(tmp_path: Path) -> None:
    need(servers.php_fpm_binary)
    saved = tmp_path / "php.json"
    with servers.php_fpm(pools={"site1": 3, "site2": 5}) as fpm:
        common = ("estimate", "--pid", str(fpm.pid), "--samples", "3", "--interval", "0.5")
        as_json = run_cli(*common, "--format", "json")
        as_metrics = run_cli(*common, "--format", "openmetrics", "--save", str(saved))
    assert as_json.code == 0, as_json.stderr
    assert as_metrics.code == 0, as_metrics.stderr

    doc = json.loads(as_json.stdout)
    groups, plan = doc["groups"], doc["plan"]
    assert [(g["pool"], g["worker_count"]) for g in groups] == [("site1", 3), ("site2", 5)]
    assert doc["plan_error"] is None and plan["kind"] == "capplan.plan"
    assert [p["name"] for p in plan["pools"]] == ["php-fpm pool site1", "php-fpm pool site2"]
    # The master both pools share (with opcache's segment, counted at its configured size)
    # is paid once: the second pool's fixed cost less the smaller of the two.
    shared = min(g["model"]["fixed_bytes"] for g in groups)
    assert shared > 0
    for i, (pool, group) in enumerate(zip(plan["pools"], groups, strict=True)):
        assert pool["fixed_bytes"] == group["model"]["fixed_bytes"] - (shared if i else 0)
        assert pool["per_instance_bytes"] == group["model"]["per_instance_bytes"]
        assert pool["measured_workers"] == group["worker_count"]
        assert pool["suggestion"]["lines"] == [
            f"pm.max_children = {pool['max_instances_conservative']}"
        ]
    point, bound = plan["point"], plan["conservative"]
    assert point["memory_bytes"] == sum(
        p["fixed_bytes"] + p["max_instances"] * p["per_instance_bytes"] for p in plan["pools"]
    )
    assert point["room_bytes"] >= 0 and point["memory_bytes"] <= plan["available_bytes"]
    assert bound["memory_bytes"] < bound["high_bytes"] <= bound["limit_bytes"]
    assert 0 < bound["workers"] <= point["workers"]
    # Together the pools fit fewer workers than either group alone answers for itself.
    for pool, group in zip(plan["pools"], groups, strict=True):
        assert pool["max_instances"] < group["prediction"]["max_instances"]

    model = json.loads(saved.read_text())
    parsed = families(as_metrics.stdout)
    by_pool: dict[str, dict[str, Any]] = {g["pool"]: g for g in model["groups"]}
    for name, value in (
        ("capplan_group_worker_memory_bytes", lambda g: g["model"]["per_instance_bytes"]),
        ("capplan_group_fixed_memory_bytes", lambda g: g["model"]["fixed_bytes"]),
        ("capplan_group_workers_measured", lambda g: g["worker_count"]),
    ):
        samples = parsed[name]
        assert sorted(labels["pool"] for labels, _ in samples) == ["site1", "site2"]
        for labels, sample in samples:
            group = by_pool[labels["pool"]]
            assert sample == value(group)
            assert labels["server"] == "php-fpm" and labels["instance"] == str(fpm.pid)
            assert labels["worker_role"] == group["worker_role"]
    for labels, sample in parsed["capplan_group_max_workers"]:
        prediction = by_pool[labels["pool"]]["prediction"]
        wanted = "max_instances" if labels["estimate"] == "point" else "max_instances_conservative"
        assert sample == prediction[wanted]
    # Each pool's activity: left alone, both pools were idle (or, on a host this busy, a
    # pool whose children ran; never unknown with 3 samples).
    states = {
        labels["pool"]: labels["state"]
        for labels, sample in parsed["capplan_group_activity_state"]
        if sample == 1
    }
    assert states == {p: by_pool[p]["activity"]["state"] for p in ("site1", "site2")}
    assert set(states.values()) <= {"idle", "busy"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch(load: str) -> dict[str, Any]:
    result = run_cli(
        "estimate", "--launch", SERVER, "--instances", "3", "--samples", "2", "--interval",
        "0.5", "--load", load, "--format", "json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_launch_mode_names_a_load_that_missed_the_instances() -> None:
    closed = free_port()
    missed = (
        f'{PY} -c "import socket, time; s = socket.socket(); '
        f"s.connect_ex(('127.0.0.1', {closed})); time.sleep(60)\""
    )
    doc = launch(missed)
    activity = doc["activity"]
    assert activity["unit"] == "instance" and activity["state"] == "idle"
    assert activity["workers"] == 3 and activity["busy_workers"] == 0
    assert doc["groups"][0]["activity"] == activity
    [warning] = [w for w in doc["warnings"] if w["code"] == "LOAD_MISSED"]
    assert warning["message"].startswith("the load generator ran, but the 3 instances did not")


@pytest.mark.skipif(shutil.which("ab") is None, reason="needs ab (apache2-utils)")
def test_launch_mode_under_load_is_busy() -> None:
    doc = launch("ab -n 1000000 -c 2 http://127.0.0.1:{port}/")
    activity = doc["activity"]
    assert activity["unit"] == "instance" and activity["state"] == "busy"
    assert activity["busy_workers"] >= 1 and activity["cpu_seconds"] > 0
    assert "LOAD_MISSED" not in {w["code"] for w in doc["warnings"]}
