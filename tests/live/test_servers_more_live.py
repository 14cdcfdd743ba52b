"""Roles (issue 13) on the real servers beyond apache2, php-fpm, PostgreSQL and gunicorn:
nginx (with its cache manager and loader), uWSGI (mules and a spooler, with and without
titles), a celery prefork pool, unicorn and puma in cluster mode.

Each runs from a temporary directory on a free loopback port (capacity.testing.servers_more;
celery on kombu's filesystem:// transport, no broker server), never a system instance, and
is selected by its master's pid. ``capplan estimate --pid MASTER`` must find the rule, each
role with its count, the workers the server itself says it runs (titles, uWSGI's spawn
log), and the configuration line for the conservative count. Then, as root, each server in
a cgroup of its own at 3 and at 9 workers: what the cgroup held per added worker (usage -
page cache + shmem, so what is paid once cancels) against capplan's per-worker cost at 9,
within 15 % (tests/live/test_groups_live.py's rule). A missing server skips with the
package to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import is_root, run_cli
from serverkit import footprint, need

from capacity.measure.cgroup import OwnCgroup, temporary_cgroup
from capacity.measure.workload import Selector, classify_selection, select_processes
from capacity.testing import servers, servers_more
from capacity.testing.servers_more import PreforkServer

TOLERANCE = 0.15

Starter = Callable[..., contextlib.AbstractContextManager[PreforkServer]]
# name -> (the starter, what says it is installed)
SERVERS: dict[str, tuple[Starter, Callable[[], object]]] = {
    "nginx": (servers_more.nginx, servers_more.nginx_binary),
    "uwsgi": (servers_more.uwsgi, servers_more.uwsgi_binary),
    "celery": (servers_more.celery, servers_more.celery_available),
    "unicorn": (servers_more.unicorn, servers_more.unicorn_binary),
    "puma": (servers_more.puma, servers_more.puma_binary),
}


def estimate(pid: int, samples: int = 2) -> dict[str, Any]:
    result = run_cli(
        "estimate",
        "--pid",
        str(pid),
        "--samples",
        str(samples),
        "--interval",
        "0.5",
        "--format",
        "json",
    )
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class Seen:
    """What the server itself said it ran while capplan sampled (read inside the block)."""

    pid: int
    worker_role: str
    workers: list[int]
    helpers: list[int]

    @classmethod
    def of(cls, server: PreforkServer) -> Seen:
        return cls(server.pid, server.worker_role, server.workers(), server.helpers())


def measured(server: PreforkServer) -> tuple[dict[str, Any], Seen]:
    """``capplan estimate --pid MASTER`` and the server's own account around it."""
    before = Seen.of(server)
    doc = estimate(server.pid)
    after = Seen.of(server)
    assert before == after, "the server changed its processes while capplan sampled"
    return doc, after


def check_roles(
    doc: dict[str, Any], seen: Seen, rule: str, roles: dict[str, int]
) -> dict[str, Any]:
    """The one group: its rule, each role's count, the workers and the fixed-cost pids the
    server itself names; the group."""
    (group,) = doc["groups"]
    assert (group["rule"], group["instance"], group["worker_role"]) == (
        rule,
        seen.pid,
        seen.worker_role,
    )
    assert group["roles"] == roles
    workload = doc["workload"]
    fixed = sorted([seen.pid, *seen.helpers])
    assert sorted(workload["parent_pids"]) == fixed
    assert sorted(set(workload["pids"]) - set(fixed)) == seen.workers
    assert sorted(group["pids"]) == sorted([*fixed, *seen.workers])
    assert workload["worker_count"] == roles[seen.worker_role]
    return group  # type: ignore[no-any-return]


def lines(group: dict[str, Any]) -> list[str]:
    suggestion = group["suggestion"]
    assert suggestion is not None, "no configuration line"
    return suggestion["lines"]  # type: ignore[no-any-return]


def conservative(group: dict[str, Any]) -> int:
    return int(group["prediction"]["max_instances_conservative"])


# --------------------------------------------------------------------------- roles


def test_nginx_master_workers_cache_manager_and_loader() -> None:
    """worker_processes 4 and a proxy_cache_path: 4 workers; the master, the cache manager
    and the cache loader fixed cost; the worker_processes line."""
    need(servers_more.nginx_binary)
    with servers_more.nginx(4, cache=True) as nginx:
        doc, seen = measured(nginx)
    # The loader exits about a minute after start: it was there all the time we sampled.
    assert len(seen.helpers) == 2
    group = check_roles(
        doc, seen, "nginx", {"master": 1, "worker": 4, "cache manager": 1, "cache loader": 1}
    )
    assert lines(group) == [f"worker_processes {conservative(group)};"]


def test_nginx_without_a_cache_is_master_and_workers() -> None:
    need(servers_more.nginx_binary)
    with servers_more.nginx(2) as nginx:
        doc, seen = measured(nginx)
    check_roles(doc, seen, "nginx", {"master": 1, "worker": 2})


@pytest.mark.parametrize(
    ("procname", "router", "roles"),
    [
        (True, False, {"master": 1, "worker": 3, "spooler": 1, "mule": 1}),
        (True, True, {"master": 1, "worker": 3, "spooler": 1, "mule": 1, "gateway": 1}),
        # Without --auto-procname every child runs the master's argv: the mule, the
        # spooler and the http router are told from the workers by the signals they catch.
        (False, False, {"master": 1, "worker": 3, "helper": 2}),
        (False, True, {"master": 1, "worker": 3, "helper": 3}),
    ],
)
def test_uwsgi_master_workers_mule_spooler_and_router(
    procname: bool, router: bool, roles: dict[str, int]
) -> None:
    need(servers_more.uwsgi_binary)
    with servers_more.uwsgi(3, mules=1, spooler=True, router=router, procname=procname) as uwsgi:
        doc, seen = measured(uwsgi)
    group = check_roles(doc, seen, "uwsgi", roles)
    count = conservative(group)
    assert lines(group) == [f"processes = {count}", f"--processes {count}"]


def test_uwsgi_one_worker_outnumbered_by_two_mules() -> None:
    """Untitled, one worker beside two mules and a spooler: the largest set of alike
    children is not the workers here."""
    need(servers_more.uwsgi_binary)
    with servers_more.uwsgi(1, mules=2, spooler=True, procname=False) as uwsgi:
        # The classifier as capplan runs it (estimate refuses one worker: no interval).
        result = classify_selection(select_processes(Selector(pid=uwsgi.pid)))
        seen = Seen.of(uwsgi)
    (group,) = result.groups
    assert (group.rule, group.counts) == ("uwsgi", {"master": 1, "worker": 1, "helper": 3})
    assert list(group.workers) == seen.workers
    assert sorted(group.fixed) == sorted([seen.pid, *seen.helpers])


def test_celery_prefork_main_and_pool_workers() -> None:
    need(servers_more.celery_available)
    with servers_more.celery(4) as celery:
        doc, seen = measured(celery)
    group = check_roles(doc, seen, "celery", {"main": 1, "pool worker": 4})
    count = conservative(group)
    assert lines(group) == [f"--concurrency {count}", f"worker_concurrency = {count}"]


def test_unicorn_master_and_workers() -> None:
    need(servers_more.unicorn_binary)
    with servers_more.unicorn(3) as unicorn:
        doc, seen = measured(unicorn)
    group = check_roles(doc, seen, "unicorn", {"master": 1, "worker": 3})
    assert lines(group) == [f"worker_processes {conservative(group)}"]


def test_puma_cluster_master_and_workers() -> None:
    need(servers_more.puma_binary)
    with servers_more.puma(3, threads=2) as puma:
        doc, seen = measured(puma)
    group = check_roles(doc, seen, "puma", {"master": 1, "cluster worker": 3})
    count = conservative(group)
    assert lines(group) == [f"workers {count}", f"--workers {count}"]
    # 2 request threads and puma's own: the note says the threads setting is per worker.
    assert group["threads"] > 2
    assert f"{group['threads']} threads each" in group["suggestion"]["note"]


# --------------------------------------------------------------------------- cgroup slope


def warm_up(server: PreforkServer) -> None:
    """Requests (ab) or tasks (celery) until the workers have served, then quiet."""
    if server.port is not None:
        servers.ab_run(server.url("/"), 3000, 8)
        return
    servers_more.celery_send(server, 200)
    deadline = time.monotonic() + 120
    while servers_more.celery_queued(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers_more.celery_queued(server) == 0, "the pool did not take its tasks"


@contextlib.contextmanager
def in_cgroup(name: str, workers: int) -> Iterator[tuple[PreforkServer, OwnCgroup]]:
    start, _ = SERVERS[name]
    with temporary_cgroup("capplan-test") as cgroup, start(workers, cgroup=cgroup) as server:
        yield server, cgroup


@pytest.mark.skipif(
    not is_root(), reason="needs root: the server runs in a memory cgroup of its own"
)
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_per_worker_cost_matches_the_servers_cgroup(name: str) -> None:
    """3 then 9 workers, each run in a fresh cgroup and warmed up: what the cgroup held per
    added worker against capplan's per-worker cost at 9, within 15 %."""
    _, installed = SERVERS[name]
    need(installed)
    if name != "celery":
        need(servers.ab_binary)
    totals: dict[int, float] = {}
    for workers in (3, 9):
        with in_cgroup(name, workers) as (server, cgroup):
            warm_up(server)
            totals[workers] = footprint(cgroup)
            doc = estimate(server.pid, samples=5)
    (group,) = doc["groups"]
    assert group["worker_count"] == 9
    # The cgroup holds only the server: it calibrates the kernel part.
    assert group["model"]["breakdown"]["kernel_source"] == "cgroup"
    truth = (totals[9] - totals[3]) / 6
    per_worker = group["model"]["per_instance_bytes"]
    error = (per_worker - truth) / truth
    print(
        f"{name}: capplan {per_worker / 1024:.1f} KiB, cgroup {truth / 1024:.1f} KiB, {error:+.1%}"
    )
    assert abs(error) <= TOLERANCE, (
        f"{name}: capplan's per-worker cost {per_worker / 1024:.1f} KiB differs from the "
        f"cgroup's slope {truth / 1024:.1f} KiB by {error:+.1%}"
    )


@pytest.mark.skipif(
    not is_root(), reason="needs root: the server runs in a memory cgroup of its own"
)
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_servers_leave_nothing_behind(name: str) -> None:
    """Every process a starter started, and the cgroup it ran in, is gone afterwards."""
    start, installed = SERVERS[name]
    need(installed)
    with temporary_cgroup("capplan-test") as cgroup:
        path = cgroup.path
        with start(2, cgroup=cgroup) as server:
            seen = [server.pid, *server.workers(), *server.helpers()]
            assert set(seen) <= cgroup.pids()
        assert cgroup.pids() == set()  # the starter stopped them, not the cgroup's removal
    assert not path.exists()
    assert [pid for pid in seen if servers.alive(pid)] == []
