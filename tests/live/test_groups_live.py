"""``capplan estimate`` per group (issue 13 part 2) on real servers started here: PostgreSQL
under pgbench, php-fpm with two pools, two apache2 prefork servers at once, apache2 with the
event MPM; and each group's per-worker cost against what its own cgroup held per added
worker, within 15 % (tests/live/test_servers.py's rule: usage - page cache + shmem, the
slope between two worker counts, so what is paid once cancels).

Every server runs from a temporary directory on a unix socket or a free loopback port
(capacity.testing.servers, servers_postgresql), never a system instance. Selections are by
the master's pid where one tree is measured; the two apache2 servers are selected by name
(``--cmd apache2``) and their groups found by their masters' pids, so a system apache2 on a
developer's machine only adds groups of its own.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import is_root, run_cli
from serverkit import footprint, need

from capacity.measure.cgroup import OwnCgroup, temporary_cgroup
from capacity.testing import servers
from capacity.testing.servers_postgresql import (
    pgbench_init,
    pgbench_load,
    postgresql,
    postgresql_bindir,
)

pytestmark = pytest.mark.skipif(
    not is_root(),
    reason="needs root: the servers run in cgroups of their own, as other users, whose "
    "memory only root may read",
)

TOLERANCE = 0.15
PG_ROLES = {
    "postmaster": 1,
    "checkpointer": 1,
    "background writer": 1,
    "walwriter": 1,
    "autovacuum launcher": 1,
    "logical replication launcher": 1,
}


def estimate(*args: str, samples: int = 3) -> dict[str, Any]:
    result = run_cli(
        "estimate", *args, "--samples", str(samples), "--interval", "0.5", "--format", "json"
    )
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def assert_agrees(what: str, per_worker: float, truth: float) -> None:
    error = (per_worker - truth) / truth
    print(
        f"{what}: capplan {per_worker / 1024:.1f} KiB, cgroup {truth / 1024:.1f} KiB, {error:+.1%}"
    )
    assert abs(error) <= TOLERANCE, (
        f"{what}: capplan's per-worker cost {per_worker / 1024:.1f} KiB differs from the "
        f"cgroup's slope {truth / 1024:.1f} KiB by {error:+.1%}"
    )


# --------------------------------------------------------------------------- PostgreSQL


def test_postgresql_estimate_counts_backends_and_lists_every_role() -> None:
    """``--pid POSTMASTER`` under pgbench with 6 clients: 6 workers (the backends), the
    postmaster and 5 background processes fixed cost, a max_connections line."""
    need(postgresql_bindir)
    with postgresql() as pg, pgbench_load(pg, 6):
        doc = estimate("--pid", str(pg.pid))
    workload = doc["workload"]
    assert workload["worker_count"] == 6
    assert (workload["server"], workload["worker_role"], workload["instance"]) == (
        "postgresql",
        "client backend",
        pg.pid,
    )
    (group,) = doc["groups"]
    assert group["roles"] == {**PG_ROLES, "client backend": 6}
    assert len(workload["parent_pids"]) == 6
    assert all(group["role_cost_bytes"][role] > 0 for role in group["roles"])
    count = group["prediction"]["max_instances_conservative"]
    assert group["suggestion"]["lines"] == [f"max_connections = {count}"]
    settings = {s["name"]: (s["value"], s["source"]) for s in group["settings"]}
    assert settings["shared_buffers"] == ("16MB", "the postmaster's command line")
    # Read from the data directory as root: not set there, so PostgreSQL's default.
    assert settings["superuser_reserved_connections"] == ("3", "not set: PostgreSQL's default")
    assert "superuser_reserved_connections = 3" in group["suggestion"]["note"]
    assert "shared_buffers = 16MB" in group["suggestion"]["note"]
    assert all("ab -n" not in w["hint"] for w in doc["warnings"])


def test_postgresql_per_backend_estimate_matches_its_cgroup() -> None:
    """The cluster in a cgroup of its own, pgbench with 4 then 12 clients: what the cgroup
    held per added backend against capplan's per-worker cost at 12."""
    need(postgresql_bindir)
    totals: dict[int, float] = {}
    with temporary_cgroup("capplan-test") as cgroup, postgresql(cgroup=cgroup) as pg:
        pgbench_init(pg)
        for clients in (4, 12):
            with pgbench_load(pg, clients, initialise=False):
                time.sleep(2)  # every backend has run transactions
                totals[clients] = footprint(cgroup)
                if clients == 12:
                    doc = estimate("--pid", str(pg.pid), samples=5)
    assert doc["workload"]["worker_count"] == 12
    assert doc["model"]["breakdown"]["kernel_source"] == "cgroup"
    truth = (totals[12] - totals[4]) / 8
    assert_agrees("PostgreSQL backend", doc["model"]["per_instance_bytes"], truth)


# --------------------------------------------------------------------------- php-fpm


def test_php_fpm_two_pools_are_two_answers_and_two_lines() -> None:
    need(servers.php_fpm_binary)
    with servers.php_fpm(pools={"site1": 3, "site2": 5}) as fpm:
        doc = estimate("--pid", str(fpm.pid))
        text = run_cli("estimate", "--pid", str(fpm.pid), "--samples", "2", "--interval", "0.5")
    assert [(g["pool"], g["worker_count"], g["roles"]) for g in doc["groups"]] == [
        ("site1", 3, {"master": 1, "pool site1 child": 3}),
        ("site2", 5, {"master": 1, "pool site2 child": 5}),
    ]
    named = [(g["suggestion"]["title"], g["suggestion"]["lines"]) for g in doc["groups"]]
    counts = [g["prediction"]["max_instances_conservative"] for g in doc["groups"]]
    assert named == [
        ("php-fpm pool site1", [f"pm.max_children = {counts[0]}"]),
        ("php-fpm pool site2", [f"pm.max_children = {counts[1]}"]),
    ]
    # The top level is the larger pool; a warning names it.
    assert doc["workload"]["pool"] == "site2"
    assert doc["warnings"][0]["code"] == "SEVERAL_GROUPS"
    assert text.code == 0, text.stderr
    assert "Group 1 of 2: php-fpm pool site1" in text.stdout
    assert "Plan for this host, its 2 groups together" in text.stdout


@contextlib.contextmanager
def pools_under_load(site1: int, cgroup: OwnCgroup | None = None) -> Iterator[servers.Server]:
    """php-fpm with pools site1 (``site1`` children, driven by ab through an apache2
    frontend outside the cgroup) and site2 (5 children, idle)."""
    with (
        servers.php_fpm(pools={"site1": site1, "site2": 5}, cgroup=cgroup) as fpm,
        servers.php_fpm_frontend(fpm, 10) as front,
    ):
        url = front.url("/index.php")
        servers.ab_run(url, max(2000, 200 * site1), 10)  # every site1 child has served
        with servers.ab_load(url, 10):
            time.sleep(1)
            yield fpm


def test_php_fpm_pool_estimate_matches_its_cgroup() -> None:
    """Pool site1 with 3 then 9 children under load beside an idle site2 of 5, each run in
    a fresh cgroup: what the cgroup held per added site1 child against capplan's site1
    per-worker cost. One line through both pools would answer for neither: the busy pool's
    children cost several times the idle pool's."""
    need(servers.php_fpm_binary, servers.apache2_binary, servers.ab_binary)
    totals: dict[int, float] = {}
    docs: dict[int, dict[str, Any]] = {}
    for site1 in (3, 9):
        with temporary_cgroup("capplan-test") as cgroup, pools_under_load(site1, cgroup) as fpm:
            totals[site1] = footprint(cgroup)
            docs[site1] = estimate("--pid", str(fpm.pid), samples=5)
    truth = (totals[9] - totals[3]) / 6
    busy, idle = docs[9]["groups"]
    assert (busy["pool"], busy["worker_count"], idle["worker_count"]) == ("site1", 9, 5)
    # The cgroup holds only php-fpm: it calibrates every pool's kernel part.
    assert busy["model"]["breakdown"]["kernel_source"] == "cgroup"
    assert_agrees("php-fpm pool site1 child", busy["model"]["per_instance_bytes"], truth)
    assert busy["model"]["per_instance_bytes"] > 2 * idle["model"]["per_instance_bytes"]


# --------------------------------------------------------------------------- apache2


def test_two_apache2_prefork_servers_are_two_groups() -> None:
    """``--cmd apache2`` with two prefork servers running: one group each, never one line
    through both; the host plan covers both."""
    need(servers.apache2_binary)
    with servers.apache2(3) as first, servers.apache2(5, modules=("cgid",)) as second:
        deadline = time.monotonic() + 20
        while len(servers.children_of(second.pid)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)  # 5 children and mod_cgid's daemon
        ours = {pid for s in (first, second) for pid in (s.pid, *servers.descendants_of(s.pid))}
        # An apache2 an earlier test stopped may still be exiting (its children outlive
        # their master a moment): a parent that exits while capplan samples fails the run.
        while set(_named("apache2")) - ours and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        doc = estimate("--cmd", "apache2")
        text = run_cli("estimate", "--cmd", "apache2", "--samples", "2", "--interval", "0.5")
    groups = {g["instance"]: g for g in doc["groups"]}
    assert {first.pid, second.pid} <= set(groups)
    one, two = groups[first.pid], groups[second.pid]
    assert (one["mpm"], one["worker_count"], one["roles"]) == (
        "prefork",
        3,
        {"parent": 1, "child": 3},
    )
    assert (two["mpm"], two["worker_count"], two["roles"]) == (
        "prefork",
        5,
        {"parent": 1, "child": 5, "cgid daemon": 1},
    )
    for group in (one, two):
        count = group["prediction"]["max_instances_conservative"]
        assert group["suggestion"]["lines"] == [
            f"ServerLimit {count}",
            f"MaxRequestWorkers {count}",
        ]
    assert doc["warnings"][0]["code"] == "SEVERAL_GROUPS"
    assert text.code == 0, text.stderr
    assert "Plan for this host" in text.stdout


def test_apache2_event_answers_in_processes_and_threads() -> None:
    need(servers.apache2_binary)
    with servers.apache2(2, mpm="event", threads_per_child=10) as apache:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            kids = servers.children_of(apache.pid)
            if len(kids) == 2 and all(_threads(k) == 12 for k in kids):
                break
            time.sleep(0.05)
        doc = estimate("--pid", str(apache.pid))
    (group,) = doc["groups"]
    assert (group["mpm"], group["threads_per_child"], group["threads"]) == ("event", 10, 12)
    processes = group["prediction"]["max_instances_conservative"]
    suggestion = group["suggestion"]
    lines = suggestion["lines"]
    assert [line.split("   # ")[0] for line in lines] == [
        "ThreadsPerChild 10",
        f"ServerLimit {processes}",
        f"MaxRequestWorkers {processes * 10}",
    ]
    # Two workers are a low-confidence fit (issue 14): the lines from the fit say so.
    assert lines[0] == "ThreadsPerChild 10"
    assert all("   # low confidence: only 2 workers measured" in line for line in lines[1:])
    assert f"{processes:,} processes" in suggestion["note"]
    assert f"{processes * 10:,} request workers" in suggestion["note"]


def _threads(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def _named(comm: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
