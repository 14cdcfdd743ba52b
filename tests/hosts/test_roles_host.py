"""Roles on a captured host that ran several servers at once (issue 13).

tests/fixtures/hosts/roles-host holds, from one moment, PostgreSQL 15 under pgbench with 6
clients (cluster_name 15/main), php-fpm with pools site1 (3) and site2 (5), two apache2
servers (prefork with mod_cgid and a rotatelogs piped logger; event with ThreadsPerChild
10) and gunicorn: see scripts/capture-roles-host. The readers run on it as on a live host
(``root`` as ``--root`` does), so this checks the files as the kernel wrote them, parsers,
selection and classifier together, without starting anything; and ``capplan estimate``
answers per group on it (issue 13 part 2).
"""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, run_cli

from capacity.measure.procfs import iter_pids
from capacity.measure.roles import classify
from capacity.measure.workload import Selector, classify_selection, role_facts, select_processes
from capacity.roles_records import Classification

ROOT = FIXTURES / "hosts" / "roles-host"
POSTMASTER, FPM, PREFORK, EVENT, GUNICORN = 8886, 8908, 8917, 8924, 8952

# (server, instance, pool, MPM, ThreadsPerChild, role -> count): the whole host's roles table.
HOST_TABLE = [
    (
        "postgresql",
        POSTMASTER,
        None,
        None,
        None,
        {
            "postmaster": 1,
            "client backend": 6,
            "checkpointer": 1,
            "background writer": 1,
            "walwriter": 1,
            "autovacuum launcher": 1,
            "logical replication launcher": 1,
        },
    ),
    ("php-fpm", FPM, "site1", None, None, {"pool site1 child": 3}),
    ("php-fpm", FPM, "site2", None, None, {"pool site2 child": 5}),
    (
        "apache2",
        PREFORK,
        None,
        "prefork",
        1,
        {"parent": 1, "child": 3, "piped logger": 1, "cgid daemon": 1},
    ),
    ("apache2", EVENT, None, "event", 10, {"parent": 1, "child": 2}),
    ("gunicorn", GUNICORN, None, None, None, {"arbiter": 1, "worker": 3}),
]


def table(classification: Classification) -> list[tuple[object, ...]]:
    return [
        (g.server, g.instance, g.pool, g.mpm, g.threads_per_child, g.counts)
        for g in classification.groups
    ]


def test_the_whole_host_in_groups_and_roles() -> None:
    facts, mpms = role_facts(iter_pids(ROOT), ROOT)
    assert len(facts) == 34
    assert mpms == {PREFORK: "prefork", EVENT: "event"}
    result = classify(facts, mpms)
    assert table(result) == HOST_TABLE
    assert result.rule == "mixed"
    (shared,) = result.shared
    assert (shared.instance, shared.roles) == (FPM, {"master": (FPM,)})
    placed = [pid for g in result.groups for pid in g.pids] + list(shared.pids)
    assert sorted(placed) == sorted(f.pid for f in facts)


@pytest.mark.parametrize(
    ("selector", "rule", "rows"),
    [
        (Selector(cmd="postgres"), "postgresql", HOST_TABLE[:1]),
        (Selector(cmd="php-fpm8.2"), "php-fpm", HOST_TABLE[1:3]),
        # --cmd apache2 selects both servers (not rotatelogs): two groups, never one.
        (
            Selector(cmd="apache2"),
            "apache2",
            [
                (*HOST_TABLE[3][:5], {"parent": 1, "child": 3, "cgid daemon": 1}),
                HOST_TABLE[4],
            ],
        ),
        (Selector(pid=PREFORK), "apache2", HOST_TABLE[3:4]),
        (Selector(pid=GUNICORN), "gunicorn", HOST_TABLE[5:]),
    ],
    ids=["postgres", "php-fpm", "apache2", "prefork-tree", "gunicorn"],
)
def test_roles_of_a_selection(
    selector: Selector, rule: str, rows: list[tuple[object, ...]]
) -> None:
    result = classify_selection(select_processes(selector, ROOT), ROOT)
    assert result.rule == rule
    assert table(result) == rows


def test_backends_are_the_pgbench_clients_and_the_rest_fixed_cost() -> None:
    result = classify_selection(select_processes(Selector(cmd="postgres"), ROOT), ROOT)
    (group,) = result.groups
    assert group.worker_role == "client backend"
    assert len(group.workers) == 6
    assert len(group.fixed) == 6  # the postmaster and 5 background processes
    titles = [(ROOT / f"proc/{pid}/cmdline").read_bytes() for pid in group.workers]
    assert all(b"[local]" in title for title in titles)


def test_the_mod_cgid_daemon_and_the_piped_logger_are_fixed_cost() -> None:
    result = classify_selection(select_processes(Selector(pid=PREFORK), ROOT), ROOT)
    (group,) = result.groups
    (logger,) = group.roles["piped logger"]
    assert (ROOT / f"proc/{logger}/cmdline").read_bytes().startswith(b"/usr/bin/rotatelogs\0")
    (daemon,) = group.roles["cgid daemon"]
    assert daemon not in group.workers
    assert set(group.fixed) == {PREFORK, logger, daemon}


# --------------------------------------------------------------------------- estimate per group


def estimate(*args: str) -> dict:
    result = run_cli(
        "estimate", "--root", str(ROOT), *args, "--samples", "1", "--method", "smaps",
        "--format", "json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_estimate_of_postgres_counts_the_6_backends_and_lists_every_role() -> None:
    doc = estimate("--cmd", "postgres")
    workload = doc["workload"]
    assert workload["worker_count"] == 6
    assert (workload["server"], workload["worker_role"], workload["instance"]) == (
        "postgresql",
        "client backend",
        POSTMASTER,
    )
    (group,) = doc["groups"]
    assert group["roles"] == HOST_TABLE[0][5]
    assert set(group["role_cost_bytes"]) == set(group["roles"])
    assert group["model"] == doc["model"] and group["prediction"] == doc["prediction"]
    count = doc["prediction"]["max_instances_conservative"]
    assert group["suggestion"]["lines"] == [f"max_connections = {count}"]
    # The captured tree has the postmaster's command line, not its data directory.
    settings = {s["name"]: s for s in group["settings"]}
    assert settings["shared_buffers"]["value"] == "16MB"
    assert settings["superuser_reserved_connections"]["value"] is None
    assert "no such file" in settings["superuser_reserved_connections"]["source"]


def test_estimate_of_apache2_answers_for_each_server_and_plans_them_together() -> None:
    doc = estimate("--cmd", "apache2")
    groups = doc["groups"]
    assert [(g["instance"], g["mpm"], g["worker_count"]) for g in groups] == [
        (PREFORK, "prefork", 3),
        (EVENT, "event", 2),
    ]
    assert groups[0]["roles"] == {"parent": 1, "child": 3, "cgid daemon": 1}
    prefork, event = (g["suggestion"]["lines"] for g in groups)
    assert prefork[0].startswith("ServerLimit ") and prefork[1].startswith("MaxRequestWorkers ")
    threads, limit, workers = event
    assert threads == "ThreadsPerChild 10"
    assert int(workers.split()[1]) == 10 * int(limit.split()[1])
    # The top level is the prefork server (3 workers), and a warning says so.
    assert doc["workload"]["instance"] == PREFORK
    assert doc["model"] == groups[0]["model"]
    codes = [w["code"] for w in doc["warnings"]]
    assert codes[0] == "SEVERAL_GROUPS"
    text = run_cli("estimate", "--root", str(ROOT), "--cmd", "apache2", "--samples", "1")
    assert text.code == 0, text.stderr
    assert "Group 2 of 2: apache2 8924 (event MPM)" in text.stdout
    assert "Plan for this host, its 2 groups together" in text.stdout
