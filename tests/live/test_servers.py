"""capplan against real servers, as its users run it: apache2 prefork, php-fpm, gunicorn.

Each server runs from a temporary directory on a loopback port or unix socket
(tests/servers.py), under ``ab`` load, inside a memory cgroup of its own. The ground truth
for the per-worker cost is the cgroup's own accounting at two worker counts: the slope
``(M(n2) - M(n1)) / (n2 - n1)`` of what the cgroup holds that is not page cache (anon,
shmem and kernel memory: ``usage - cache + shmem``). Page cache is left out because the
kernel charges a file's pages to whichever cgroup read them first, so it depends on what
ran before, and under pressure it is reclaimed rather than OOM-killed. Using a slope rather
than one reading cancels what is paid once (the parent, the shared pages).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from conftest import REPO, is_root, run_cli
from serverkit import footprint, need

from capacity.measure.cgroup import OwnCgroup, temporary_cgroup
from capacity.testing import servers

pytestmark = pytest.mark.skipif(
    not is_root(),
    reason="needs root: the servers run in cgroups of their own and their workers drop to "
    "www-data, whose memory only root may read",
)

TOLERANCE = 0.15
LOAD_CONCURRENCY = 10
MIN_REQUESTS_DURING_MEASUREMENT = 500


def capplan_under_load(
    url: str, logged_by: servers.Server, *args: str, prefix: list[str] | None = None
) -> dict[str, Any]:
    """Run ``capplan estimate ARGS --format json`` (inside ``prefix``, e.g. nsenter) while
    ``ab`` loads ``url``, and check from ``logged_by``'s access log that it really did."""
    command = [*(prefix or []), sys.executable, "-m", "capacity", "estimate", *args]
    with servers.ab_load(url, LOAD_CONCURRENCY):
        before = logged_by.requests_logged()
        completed = subprocess.run(
            [*command, "--format", "json"], capture_output=True, text=True, timeout=300, cwd=REPO
        )
        served = logged_by.requests_logged() - before
    assert completed.returncode == 0, completed.stderr
    assert served >= MIN_REQUESTS_DURING_MEASUREMENT, f"only {served} requests under 'load'"
    return json.loads(completed.stdout)  # type: ignore[no-any-return]


def warm(url: str, workers: int) -> None:
    """Every worker serves requests before we measure (prefork accept is round robin)."""
    servers.ab_run(url, max(2000, 200 * workers), LOAD_CONCURRENCY)


def wait_for_requests(server: servers.Server, count: int = 500) -> None:
    """Block until the background load has been served ``count`` more requests."""
    start = server.requests_logged()
    servers.wait_until(
        lambda: server.requests_logged() - start >= count, 60, f"{count} requests under load"
    )


Start = Callable[[int, OwnCgroup], AbstractContextManager[Any]]


def slope_from_cgroup(start: Start, url_of: Callable[[Any], str], low: int, high: int) -> float:
    """Per-worker cost from the cgroup: instances with ``low`` and ``high`` workers under the
    same load, each in a fresh cgroup."""
    totals = {}
    for count in (low, high):
        with temporary_cgroup("capplan-test") as cgroup, start(count, cgroup) as server:
            url = url_of(server)
            warm(url, count)
            with servers.ab_load(url, LOAD_CONCURRENCY):
                wait_for_requests(server if isinstance(server, servers.Server) else server[1])
                totals[count] = footprint(cgroup)
    return (totals[high] - totals[low]) / (high - low)


def assert_estimate_structure(doc: dict[str, Any], workers: int, samples: int = 5) -> None:
    workload, model, prediction = doc["workload"], doc["model"], doc["prediction"]
    assert workload["worker_count"] == workers
    assert len(workload["parent_pids"]) == 1
    assert len(workload["pids"]) == workers + 1
    assert len(doc["samples"]) == samples
    for snapshot in doc["samples"]:
        assert len([p for p in snapshot["processes"] if p["role"] == "worker"]) == workers
    low, high = model["per_instance_ci95"]
    assert 0 < low <= model["per_instance_bytes"] <= high
    assert model["fixed_bytes"] > 0
    assert model["breakdown"]["per_instance_page_tables_bytes"] > 0
    assert 0 < prediction["max_instances_conservative"] <= prediction["max_instances"]
    assert {"largest_rss", "rss_minus_shr", "pss", "capplan"} <= set(doc["estimators"])
    # ΣRSS-style rules count every shared page once per worker: always fewer workers.
    assert doc["estimators"]["largest_rss"]["max_instances"] < prediction["max_instances"]


def assert_agrees(per_worker: float, truth: float) -> None:
    error = (per_worker - truth) / truth
    assert abs(error) <= TOLERANCE, (
        f"capplan's per-worker cost {per_worker / 1024:.1f} KiB differs from the cgroup's "
        f"slope {truth / 1024:.1f} KiB by {error:+.1%}"
    )


# --------------------------------------------------------------------------- apache2


@pytest.fixture(scope="module")
def apache2_available() -> None:
    need(servers.apache2_binary, servers.ab_binary, servers.pid_namespace_available)


def apache2_in_cgroup(count: int, cgroup: OwnCgroup) -> AbstractContextManager[servers.Server]:
    return servers.apache2(count, cgroup=cgroup)


def test_apache2_prefork_estimate_matches_its_cgroup(apache2_available: None) -> None:
    """``capplan estimate --cmd apache2 --samples 5`` on 10 prefork workers under ab load.

    The instance runs in a PID namespace of its own and capplan runs inside it (nsenter), so
    ``--cmd apache2`` selects this instance even when the host runs other apache2s.
    """
    with (
        temporary_cgroup("capplan-test") as cgroup,
        servers.apache2(10, cgroup=cgroup, namespace=True) as apache,
    ):
        warm(apache.url(), 10)
        doc = capplan_under_load(
            apache.url(),
            apache,
            "--cmd",
            "apache2",
            "--samples",
            "5",
            prefix=apache.enter_command(),
        )
        # Inside the namespace the master is pid 1 and its workers are its children.
        assert doc["workload"]["parent_pids"] == [1]
        assert doc["workload"]["selector"] == "--cmd apache2"
        assert doc["workload"]["name"] == "apache2"
    assert_estimate_structure(doc, workers=10)
    # The workload's cgroup held only apache2: capplan calibrated kernel memory from it.
    assert doc["model"]["breakdown"]["kernel_source"] == "cgroup"
    truth = slope_from_cgroup(apache2_in_cgroup, lambda s: s.url(), 10, 20)
    assert_agrees(doc["model"]["per_instance_bytes"], truth)


def test_inspect_lists_apache2_modules_and_apr(apache2_available: None) -> None:
    """``capplan inspect --cmd apache2`` lists the loaded mod_*.so and libapr."""
    if run_cli("inspect", "--help").code != 0:
        pytest.skip(
            "capplan has no 'inspect' command yet (issue 3 adds it); this test runs once it does"
        )
    modules = ("status", "proxy")
    with servers.apache2(4, namespace=True, modules=modules) as apache:
        completed = subprocess.run(
            [
                *apache.enter_command(),
                sys.executable,
                "-m",
                "capacity",
                "inspect",
                "--cmd",
                "apache2",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
    assert completed.returncode == 0, completed.stderr
    output = completed.stdout
    for module in (*servers.APACHE_BASE_MODULES, *modules):
        assert f"mod_{module}.so" in output, f"mod_{module}.so missing from:\n{output}"
    assert "libapr-1.so" in output
    assert "libaprutil-1.so" in output


# --------------------------------------------------------------------------- php-fpm


@pytest.fixture(scope="module")
def php_fpm_available() -> None:
    need(servers.php_fpm_binary, servers.apache2_binary, servers.ab_binary)


@pytest.fixture
def php_fpm_under_frontend() -> Callable[[int, OwnCgroup], AbstractContextManager[Any]]:
    import contextlib

    @contextlib.contextmanager
    def start(count: int, cgroup: OwnCgroup) -> Iterator[tuple[servers.Server, servers.Server]]:
        # The frontend apache2 runs outside the cgroup: only php-fpm is measured.
        with (
            servers.php_fpm(count, cgroup=cgroup) as fpm,
            servers.php_fpm_frontend(fpm, LOAD_CONCURRENCY) as front,
        ):
            yield fpm, front

    return start


def test_php_fpm_estimate_matches_its_cgroup(
    php_fpm_available: None,
    php_fpm_under_frontend: Callable[[int, OwnCgroup], AbstractContextManager[Any]],
) -> None:
    """``capplan estimate --pid <php-fpm master>`` on a static pool of 10 under ab load."""
    with (
        temporary_cgroup("capplan-test") as cgroup,
        php_fpm_under_frontend(10, cgroup) as (fpm, front),
    ):
        url = front.url("/index.php")
        warm(url, 10)
        doc = capplan_under_load(url, front, "--pid", str(fpm.pid), "--samples", "5")
        assert doc["workload"]["parent_pids"] == [fpm.pid]
        assert set(doc["workload"]["pids"]) == {fpm.pid, *fpm.workers()}
    assert_estimate_structure(doc, workers=10)
    truth = slope_from_cgroup(php_fpm_under_frontend, lambda s: s[1].url("/index.php"), 10, 20)
    assert_agrees(doc["model"]["per_instance_bytes"], truth)


# --------------------------------------------------------------------------- gunicorn


def test_gunicorn_estimate_matches_its_cgroup() -> None:
    """``capplan estimate --pid <gunicorn master>`` on 6 sync workers under ab load."""
    need(servers.gunicorn_available, servers.ab_binary)

    def start(count: int, cgroup: OwnCgroup) -> AbstractContextManager[servers.Server]:
        return servers.gunicorn(count, cgroup=cgroup)

    with temporary_cgroup("capplan-test") as cgroup, start(6, cgroup) as server:
        warm(server.url(), 6)
        doc = capplan_under_load(server.url(), server, "--pid", str(server.pid), "--samples", "5")
        assert doc["workload"]["parent_pids"] == [server.pid]
        assert set(doc["workload"]["pids"]) == {server.pid, *server.workers()}
    assert_estimate_structure(doc, workers=6)
    truth = slope_from_cgroup(start, lambda s: s.url(), 6, 12)
    assert_agrees(doc["model"]["per_instance_bytes"], truth)


def test_servers_leave_nothing_behind() -> None:
    """Every process a launcher started, and the cgroup it ran in, is gone afterwards."""
    need(servers.apache2_binary, servers.php_fpm_binary, servers.pid_namespace_available)
    seen: list[int] = []
    with temporary_cgroup("capplan-test") as cgroup:
        path = cgroup.path
        with servers.apache2(3, cgroup=cgroup, namespace=True) as apache:
            seen += [apache.process.pid, apache.pid, *apache.workers()]
            assert set(seen) - {apache.process.pid} <= cgroup.pids()
        with servers.php_fpm(3, cgroup=cgroup) as fpm:
            seen += [fpm.pid, *fpm.workers()]
            assert fpm.socket_path is not None and fpm.socket_path.exists()
        assert cgroup.pids() == set()
    assert not path.exists()
    assert [pid for pid in seen if servers.alive(pid)] == []
