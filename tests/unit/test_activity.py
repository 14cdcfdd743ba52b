"""Busy or idle (capacity.model.activity) on constructed snapshots, and what the warnings
and hints then say, per server kind."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import REPO

from capacity.model import activity
from capacity.model.diagnostics import diagnose, load_hint
from capacity.modelfile import load_estimate
from capacity.records import MemoryRollup, ProcessMemory, Snapshot, Workload
from capacity.render.report import activity_lines

T0 = 1_700_000_000.0


def process(pid: int, role: str = "worker", cpu: float | None = 1.0, switches: int = 100,
            start: int = 5000) -> ProcessMemory:  # fmt: skip
    return ProcessMemory(
        pid=pid,
        start_ticks=start,
        ppid=1 if role == "parent" else 10,
        name="server",
        state="S",
        role="parent" if role == "parent" else "worker",
        threads=1,
        rollup=MemoryRollup(rss_bytes=4096, pss_bytes=4096),
        cpu_seconds=cpu,
        voluntary_switches=None if cpu is None else switches,
        nonvoluntary_switches=None if cpu is None else switches // 10,
    )


def snapshot(index: int, at: float, processes: list[ProcessMemory]) -> Snapshot:
    return Snapshot(
        index=index,
        taken_at=T0 + at,
        elapsed_seconds=at,
        read_seconds=0.01,
        processes=(process(10, "parent"), *processes),
    )


def pair(before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]],
         seconds: float = 4.0) -> list[Snapshot]:  # fmt: skip
    """Two snapshots ``seconds`` apart with workers {pid: (cpu seconds, switches)}, and one
    in between that the decision must not need."""
    middle = snapshot(
        1, seconds / 2, [process(p, cpu=c, switches=s) for p, (c, s) in before.items()]
    )
    return [
        snapshot(0, 0.0, [process(p, cpu=c, switches=s) for p, (c, s) in before.items()]),
        middle,
        snapshot(2, seconds, [process(p, cpu=c, switches=s) for p, (c, s) in after.items()]),
    ]


def test_workers_that_did_not_run_are_idle() -> None:
    # 5 wakes a second each (the demo polls its parent) and no CPU tick: idle.
    before = {11: (1.00, 500), 12: (2.00, 700), 13: (0.50, 300)}
    after = {11: (1.00, 520), 12: (2.00, 722), 13: (0.50, 320)}
    found = activity.measure(pair(before, after))
    assert found.state == "idle"
    assert (found.workers, found.busy_workers) == (3, 0)
    assert found.duration_seconds == pytest.approx(4.0)
    assert found.cpu_seconds == 0.0
    assert activity_lines(found) == [
        "Activity: measured idle: the 3 workers did not run in the 4.0 s between the first "
        "and last sample"
    ]


def test_one_clock_tick_is_a_boundary_crossed_not_work() -> None:
    found = activity.measure(pair({11: (1.00, 10)}, {11: (1.01, 12)}))
    assert found.state == "idle"


def test_busy_workers_report_cpu_and_switches_per_second() -> None:
    before = {11: (1.0, 1000), 12: (1.0, 1000)}
    after = {11: (2.0, 5000), 12: (1.4, 3000)}  # 1.4 CPU s and 6,000 (+600 involuntary)
    found = activity.measure(pair(before, after, seconds=4.0))
    assert found.state == "busy"
    assert (found.workers, found.busy_workers) == (2, 2)
    assert found.cpu_seconds == pytest.approx(1.4)
    assert found.cpu_per_worker == pytest.approx(1.4 / 2 / 4)
    assert found.busiest_cpu == pytest.approx(1.0 / 4)
    assert found.context_switches == 6000 + 600
    assert found.switches_per_second == pytest.approx(6600 / 4)
    assert found.switches_per_worker == pytest.approx(6600 / 2 / 4)
    [line] = activity_lines(found)
    assert line.startswith("Activity: busy: 2 of 2 workers ran in the 4.0 s")
    assert "0.175 CPU seconds per worker per second (busiest 0.250)" in line
    assert "1,650 context switches per second (825 per worker)" in line


def test_one_busy_worker_among_idle_ones_is_busy() -> None:
    before = {11: (1.0, 100), 12: (1.0, 100), 13: (1.0, 100), 14: (1.0, 100)}
    after = {11: (1.0, 100), 12: (1.3, 900), 13: (1.0, 101), 14: (1.0, 100)}
    found = activity.measure(pair(before, after))
    assert found.state == "busy"
    assert (found.workers, found.busy_workers) == (4, 1)
    assert found.busiest_cpu == pytest.approx(0.3 / 4)
    assert found.cpu_per_worker == pytest.approx(0.3 / 4 / 4)


def test_a_worker_waiting_on_io_is_busy_by_its_switches_alone() -> None:
    # No CPU tick, but 200 switches a second: a server that waits for I/O per request.
    found = activity.measure(pair({11: (1.0, 0)}, {11: (1.0, 800)}))
    assert found.state == "busy" and found.busy_workers == 1


def test_workers_that_came_and_went_are_not_followed_but_named() -> None:
    snaps = pair({11: (1.0, 10), 12: (1.0, 10)}, {11: (1.0, 10), 13: (0.0, 0)})
    found = activity.measure(snaps)
    assert found.state == "idle" and found.workers == 1
    assert found.note == "other workers while sampling: 1 started and 1 exited (not followed)"
    assert activity_lines(found)[1] == "    " + found.note


@pytest.mark.parametrize(
    ("snaps", "note"),
    [
        ([snapshot(0, 0.0, [process(11)])], "one sample"),
        ([snapshot(0, 0.0, [process(11)]), snapshot(1, 1.0, [process(12)])], "no worker"),
        ([snapshot(0, 0.0, [process(11, cpu=None)]), snapshot(1, 1.0, [process(11)])], "not read"),
        ([snapshot(0, 1.0, [process(11)]), snapshot(1, 1.0, [process(11)])], "at once"),
    ],
)
def test_what_cannot_be_told_is_unknown(snaps: list[Snapshot], note: str) -> None:
    found = activity.measure(snaps)
    assert found.state == "unknown"
    assert note in found.note
    assert activity_lines(found)[0].startswith("Activity: not known whether the workers ran: ")


# --------------------------------------------------------------------------- warnings and hints


@pytest.fixture(scope="module")
def demo():
    return load_estimate(REPO / "models/demo.json")


def _warnings(estimate, found, *, under_load=False, workload=None):  # type: ignore[no-untyped-def]
    return diagnose(
        estimate.samples,
        estimate.model,
        estimate.budget,
        estimate.prediction,
        estimate.environment,
        selector="--pid 31484",
        samples_requested=5,
        under_load=under_load,
        activity=found,
        workload=workload,
    )


IDLE = activity.measure(pair({11: (1.0, 10)}, {11: (1.0, 10)}))
BUSY = activity.measure(pair({11: (1.0, 10)}, {11: (3.0, 9000)}))


def test_idle_says_measured_idle_and_busy_says_nothing(demo) -> None:  # type: ignore[no-untyped-def]
    [cow] = [n for n in _warnings(demo, IDLE) if n.code == "COW_DRIFT_LIKELY"]
    assert cow.message.startswith("measured idle: the 1 workers did not run while capplan sampled")
    assert "70.1 MiB copy-on-write" in cow.message
    assert not [n for n in _warnings(demo, BUSY) if n.code == "COW_DRIFT_LIKELY"]
    # Busy without --load: real traffic served them; no word about load at all.
    assert not [n for n in _warnings(demo, BUSY) if "idle" in n.message]


def test_unknown_still_warns_but_does_not_say_idle(demo) -> None:  # type: ignore[no-untyped-def]
    unknown = activity.measure(demo.samples[:1])
    [cow] = [n for n in _warnings(demo, unknown) if n.code == "COW_DRIFT_LIKELY"]
    assert "not known (one sample" in cow.message and "measured idle" not in cow.message
    assert not [
        n for n in _warnings(demo, unknown, under_load=True) if n.code == "COW_DRIFT_LIKELY"
    ]


def test_a_load_generator_that_missed_the_workers_is_named(demo) -> None:  # type: ignore[no-untyped-def]
    codes = [n.code for n in _warnings(demo, IDLE, under_load=True)]
    assert "LOAD_MISSED" in codes and "COW_DRIFT_LIKELY" not in codes
    assert "LOAD_MISSED" not in [n.code for n in _warnings(demo, BUSY, under_load=True)]


def workload(name: str, exe: str | None = None, cmdline: tuple[str, ...] = ()) -> Workload:
    return Workload(selector="--cmd x", name=name, pids=(1, 2), parent_pids=(1,), worker_count=1,
                    exe=exe, parent_cmdline=cmdline)  # fmt: skip


RERUN = "capplan estimate --cmd x"


def test_postgres_gets_pgbench_with_a_command_to_run() -> None:
    hint = load_hint(workload("postgres", "/usr/lib/postgresql/15/bin/postgres"), RERUN)
    assert "pgbench -i -s 10 bench" in hint
    assert f"{RERUN} --load 'pgbench -c 8 -j 2 -T 600 bench' --samples 30" in hint
    assert "ab " not in hint and "http" not in hint


@pytest.mark.parametrize(
    "server",
    [
        workload("apache2", "/usr/sbin/apache2"),
        workload("nginx", "/usr/sbin/nginx"),
        workload("gunicorn", None, ("/usr/bin/python3", "/usr/bin/gunicorn", "app:app")),
        workload("php-fpm8.2", "/usr/sbin/php-fpm8.2"),
        workload("httpd"),
    ],
)
def test_http_servers_get_ab_or_hey(server: Workload) -> None:
    hint = load_hint(server, RERUN)
    assert f"{RERUN} --load 'ab -n 100000 -c 8 http://127.0.0.1:PORT/' --samples 30" in hint
    assert "hey -z 60s -c 8" in hint
    assert "pgbench" not in hint
    assert ("web server in front of php-fpm" in hint) == server.name.startswith("php-fpm")


@pytest.mark.parametrize("server", [workload("python3", None, ("python3", "-m", "capacity.demo")),
                                    workload("redis-server"), None])  # fmt: skip
def test_an_unknown_server_gets_no_load_command(server: Workload | None) -> None:
    hint = load_hint(server, RERUN)
    assert (
        hint
        == f"put it under its usual load and measure again while it serves: {RERUN} --samples 30"
    )


def test_the_saved_demo_reads_without_activity(demo) -> None:  # type: ignore[no-untyped-def]
    """models/demo.json predates the CPU fields: they read as None, activity unknown."""
    assert demo.activity is None
    assert all(p.cpu_seconds is None for s in demo.samples for p in s.processes)
    assert activity.measure(demo.samples).state == "unknown"
    again = dataclasses.replace(demo, activity=IDLE)
    assert again.activity is not None and again.activity.state == "idle"
