"""Busy or idle in launch mode (``activity.measure_instances``): instances start one per
step, so each process is followed from the first sample it is in to the last, by the same
rule as attach mode; and what the warnings then say."""

from __future__ import annotations

import pytest
from conftest import REPO

from capacity.model import activity
from capacity.model.diagnostics import diagnose
from capacity.modelfile import load_estimate
from capacity.records import MemoryRollup, ProcessMemory, Snapshot
from capacity.render.report import activity_lines

T0 = 1_700_000_000.0


def process(pid: int, instance: int, cpu: float | None, switches: int) -> ProcessMemory:
    return ProcessMemory(
        pid=pid,
        start_ticks=pid * 10,
        ppid=1,
        name="server",
        state="S",
        role="worker",
        threads=1,
        rollup=MemoryRollup(rss_bytes=4096, pss_bytes=4096),
        instance=instance,
        cpu_seconds=cpu,
        voluntary_switches=None if cpu is None else switches,
        nonvoluntary_switches=None if cpu is None else 0,
    )


def steps(*samples: tuple[float, dict[int, tuple[int, float | None, int]]]) -> list[Snapshot]:
    """Snapshots at (seconds, {pid: (instance, cpu seconds, switches)})."""
    return [
        Snapshot(
            index=i,
            taken_at=T0 + at,
            elapsed_seconds=at,
            read_seconds=0.01,
            processes=tuple(process(pid, n, c, s) for pid, (n, c, s) in found.items()),
        )
        for i, (at, found) in enumerate(samples)
    ]


def test_each_instance_is_followed_from_its_own_step() -> None:
    # Instance 1 (pids 11, 12) from 0 s, instance 2 (21) from 2 s, instance 3 (31) first
    # read at the last sample. Instance 2 ran 0.5 s of CPU in its 2 s; instance 1 did not.
    snaps = steps(
        (0.0, {11: (1, 1.0, 10), 12: (1, 0.5, 10)}),
        (2.0, {11: (1, 1.0, 12), 12: (1, 0.5, 11), 21: (2, 0.2, 5)}),
        (4.0, {11: (1, 1.0, 14), 12: (1, 0.5, 12), 21: (2, 0.7, 15), 31: (3, 0.1, 1)}),
    )
    found = activity.measure_instances(snaps)
    assert found.unit == "instance" and found.state == "busy"
    assert (found.workers, found.busy_workers) == (2, 1)
    assert found.duration_seconds == pytest.approx(4.0)
    assert found.cpu_seconds == pytest.approx(0.5)
    assert found.busiest_cpu == pytest.approx(0.5 / 2)  # over instance 2's own 2 s
    assert found.cpu_per_worker == pytest.approx((0 / 4 + 0.5 / 2) / 2)
    assert found.context_switches == 4 + 2 + 10
    assert found.switches_per_second == pytest.approx(6 / 4 + 10 / 2)
    assert "instance 3 first read at the last sample" in found.note
    [line, note] = activity_lines(found)
    assert line.startswith("Activity: busy: 1 of 2 instances ran in the 4.0 s")
    assert "CPU seconds per instance per second" in line
    assert note == "    " + found.note


def test_an_instance_runs_when_any_process_of_its_tree_runs() -> None:
    snaps = steps(
        (0.0, {11: (1, 1.0, 10), 12: (1, 0.5, 10)}),
        (4.0, {11: (1, 1.0, 10), 12: (1, 0.5, 400)}),  # its child waited on I/O 100 times/s
    )
    found = activity.measure_instances(snaps)
    assert (found.state, found.workers, found.busy_workers) == ("busy", 1, 1)


def test_instances_that_did_not_run_are_idle() -> None:
    snaps = steps(
        (0.0, {11: (1, 1.0, 10)}),
        (2.0, {11: (1, 1.0, 15), 21: (2, 0.3, 3)}),
        (4.0, {11: (1, 1.01, 20), 21: (2, 0.3, 8)}),  # one tick and 5 wakes a second
    )
    found = activity.measure_instances(snaps)
    assert (found.state, found.workers, found.busy_workers) == ("idle", 2, 0)
    assert activity_lines(found)[0] == (
        "Activity: measured idle: the 2 instances did not run in the 4.0 s between the first "
        "and last sample"
    )


@pytest.mark.parametrize(
    ("snaps", "note"),
    [
        (steps((0.0, {11: (1, 1.0, 1)})), "one sample"),
        (steps((0.0, {11: (1, None, 0)}), (1.0, {11: (1, 1.0, 1)})), "not read"),
        (steps((0.0, {11: (1, 1.0, 1)}), (1.0, {21: (2, 1.0, 1)})), "instance 2 first read"),
    ],
)
def test_what_cannot_be_told_is_unknown(snaps: list[Snapshot], note: str) -> None:
    found = activity.measure_instances(snaps)
    assert found.state == "unknown" and found.unit == "instance"
    assert note in found.note


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    return load_estimate(REPO / "models/demo.json")


def test_a_load_that_missed_the_instances_is_named_in_their_words(demo) -> None:  # type: ignore[no-untyped-def]
    idle = activity.measure_instances(
        steps((0.0, {11: (1, 1.0, 10)}), (2.0, {11: (1, 1.0, 10), 21: (2, 1.0, 1)}),
              (4.0, {11: (1, 1.0, 10), 21: (2, 1.0, 1)}))
    )  # fmt: skip
    notices = diagnose(
        demo.samples,
        demo.model,
        demo.budget,
        demo.prediction,
        demo.environment,
        selector="--launch x --instances 3",
        samples_requested=1,
        under_load=True,
        activity=idle,
    )
    [missed] = [n for n in notices if n.code == "LOAD_MISSED"]
    assert missed.message.startswith("the load generator ran, but the 2 instances did not")
