"""Roles (issue 13) on real servers started here: PostgreSQL under pgbench, php-fpm with a
pool per site, two apache2 prefork servers at once, apache2 with the event MPM.

Each server runs from a temporary directory on a unix socket or a free loopback port
(capacity.testing.servers, servers_postgresql), never a system instance; the classifier
reads the live /proc as capplan will. Selections are by pid (the server's tree), so a
system instance of the same server on a developer's machine changes nothing here. Each
test takes a second or two.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from serverkit import need

from capacity.measure.roles import classify
from capacity.measure.workload import Selector, classify_selection, role_facts, select_processes
from capacity.roles_records import Classification, Group
from capacity.testing import servers
from capacity.testing.servers_postgresql import client_backends, pgbench_load, postgresql

PG_BACKGROUND = {
    "checkpointer": 1,
    "background writer": 1,
    "walwriter": 1,
    "autovacuum launcher": 1,
    "logical replication launcher": 1,
}


def roles_of(*servers_: servers.Server) -> Classification:
    """The classification of the servers' trees read from the live /proc."""
    pids = [pid for s in servers_ for pid in (s.pid, *servers.descendants_of(s.pid))]
    return classify(*role_facts(pids))


def settled(
    read: Callable[[], Classification], ok: Callable[[Classification], bool]
) -> Classification:
    """The classification once ``ok`` holds: a server's children appear one by one."""
    deadline = time.monotonic() + 20
    result = read()
    while not ok(result) and time.monotonic() < deadline:
        time.sleep(0.05)
        result = read()
    return result


def only(result: Classification) -> Group:
    assert len(result.groups) == 1, result.groups
    return result.groups[0]


@pytest.mark.parametrize("cluster_name", [None, "15/main"])
def test_postgresql_under_pgbench_has_6_backends_and_its_background_roles(
    cluster_name: str | None,
) -> None:
    from capacity.testing.servers_postgresql import postgresql_bindir

    need(postgresql_bindir)
    with postgresql(cluster_name=cluster_name) as pg, pgbench_load(pg, 6) as load:
        assert load.process.poll() is None, load.output.read_text()
        group = only(classify_selection(select_processes(Selector(pid=pg.pid))))
        backends = client_backends(pg)
    assert (group.rule, group.server, group.instance) == ("postgresql", "postgresql", pg.pid)
    assert group.worker_role == "client backend"
    assert group.workers == tuple(sorted(backends))
    assert group.counts == {"postmaster": 1, "client backend": 6, **PG_BACKGROUND}
    assert pg.pid in group.fixed and len(group.fixed) == 6  # postmaster + 5 background


def test_php_fpm_with_two_pools_is_two_groups_of_3_and_5() -> None:
    need(servers.php_fpm_binary)
    with servers.php_fpm(pools={"site1": 3, "site2": 5}) as fpm:
        result = classify_selection(select_processes(Selector(pid=fpm.pid)))
    assert result.rule == "php-fpm"
    assert [(g.instance, g.pool, g.worker_role, len(g.workers)) for g in result.groups] == [
        (fpm.pid, "site1", "pool site1 child", 3),
        (fpm.pid, "site2", "pool site2 child", 5),
    ]
    (shared,) = result.shared
    assert shared.roles == {"master": (fpm.pid,)}


def test_two_apache2_prefork_servers_at_once_are_two_groups(tmp_path: Path) -> None:
    need(servers.apache2_binary)
    logger = f'CustomLog "||/usr/bin/rotatelogs {tmp_path}/access.%Y 86400" common'
    with (
        servers.apache2(3) as first,
        servers.apache2(4, modules=("cgid",), extra=logger) as second,
    ):
        result = settled(
            lambda: roles_of(first, second),
            lambda r: [len(g.workers) for g in r.groups] == [3, 4],
        )
    assert result.rule == "apache2"
    assert [(g.instance, g.mpm, g.threads_per_child, len(g.workers)) for g in result.groups] == [
        (first.pid, "prefork", 1, 3),
        (second.pid, "prefork", 1, 4),
    ]
    assert result.groups[0].counts == {"parent": 1, "child": 3}
    # mod_cgid's daemon and the piped logger are the second server's fixed cost.
    assert result.groups[1].counts == {"parent": 1, "child": 4, "cgid daemon": 1, "piped logger": 1}


def test_apache2_event_with_threads_per_child_10() -> None:
    need(servers.apache2_binary)
    with servers.apache2(2, mpm="event", threads_per_child=10) as apache:
        group = only(
            settled(
                lambda: classify_selection(select_processes(Selector(pid=apache.pid))),
                lambda r: len(r.groups[0].workers) == 2 and r.groups[0].threads == 12,
            )
        )
    assert (group.rule, group.mpm, group.threads_per_child) == ("apache2", "event", 10)
    assert group.threads == 12  # 10 worker threads, the listener and the main thread
    assert group.counts == {"parent": 1, "child": 2}


def test_gunicorn_arbiter_and_workers() -> None:
    need(servers.gunicorn_available)
    with servers.gunicorn(3) as gunicorn:
        group = only(classify_selection(select_processes(Selector(pid=gunicorn.pid))))
    assert (group.rule, group.counts) == ("gunicorn", {"arbiter": 1, "worker": 3})
