"""The pressure probe's rule on recorded readings (pure), its state files, and the system
side it feeds (issue 14 part 3).

The readings are the counters capplan read on this host (v1, Linux 6.18) while it probed
three launched instances of two workloads: one that had read a 96 MiB file once (cold
cache), one that re-reads it all the time (hot cache); see docs/how-it-measures.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
from pathlib import Path

import pytest

from capacity.measure import leftovers
from capacity.measure.probe import (
    PAGE_SIZE,
    ProbeRule,
    Reading,
    SavedKnob,
    floor_of,
    judge,
    next_limit,
    parse_pressure,
    read_states,
    refault_pages,
    restore_knobs,
    stall_share,
    step_size,
    write_state,
)
from capacity.model.probe import probed_totals, reclaimable_share
from capacity.records import LaunchStep, ProbeRun

MIB = 1024 * 1024
RULE = ProbeRule()

# memory.stat of the run's cgroup with one cold instance (v1 names, the total_ lines).
V1_COLD = {
    "total_rss": 41668608,
    "total_cache": 100667392,
    "total_shmem": 0,
    "total_workingset_refault_file": 0,
}


def reading(at: float, usage: int, total_us: int | None, refaults: int, **kw: object) -> Reading:
    return Reading(
        at=at,
        usage_bytes=usage,
        stat={},
        some_avg10=0.0,
        some_total_us=total_us,
        refault_pages=refaults,
        limit_hits=int(kw.get("hits", 0)),  # type: ignore[call-overload]
        oom_kills=int(kw.get("oom", 0)),  # type: ignore[call-overload]
        under_oom=bool(kw.get("under", False)),
    )


def test_parse_pressure_reads_some_avg10_and_total() -> None:
    text = (
        "some avg10=1.99 avg60=0.41 avg300=0.09 total=1186204\n"
        "full avg10=1.50 avg60=0.30 avg300=0.07 total=901223\n"
    )
    assert parse_pressure(text) == (1.99, 1186204)
    assert parse_pressure("") is None
    assert parse_pressure("some avg10=x total=1\n") is None


def test_refaults_prefer_the_file_counter_and_v1_totals() -> None:
    assert refault_pages({"workingset_refault_file": 7, "workingset_refault": 9}, 2) == 7
    assert refault_pages({"workingset_refault": 9}, 2) == 9  # before 5.9
    assert refault_pages({"workingset_refault_file": 3, "total_workingset_refault_file": 8}, 1) == 8
    assert refault_pages({}, 2) == 0


def test_floor_keeps_what_reclaim_cannot_free() -> None:
    usage = 143245312
    floor = floor_of(usage, V1_COLD, 1, RULE)
    # usage less the page cache, plus the margin (2 % of usage here): above anonymous memory.
    margin = max(2 * MIB, round(0.02 * usage))
    assert floor == -(-(usage - V1_COLD["total_cache"] + margin) // PAGE_SIZE) * PAGE_SIZE
    assert floor > V1_COLD["total_rss"]
    # Shared memory is in the cache counter but does not go without swap.
    shm = {"file": 64 * MIB, "shmem": 48 * MIB, "anon": 10 * MIB}
    assert floor_of(80 * MIB, shm, 2, RULE) == 80 * MIB - 16 * MIB + 2 * MIB
    # Nothing reclaimable: the floor is the usage (the probe then takes no step).
    assert floor_of(50 * MIB, {"file": 0}, 2, RULE) == 50 * MIB


def test_steps_are_small_and_reach_the_floor_within_max_steps() -> None:
    start, floor = 143245312, 45445120
    step = step_size(start, floor, RULE)
    assert step >= RULE.step_share * start
    assert step * RULE.max_steps >= start - floor
    limits, usage = [], start
    while usage > floor:
        usage = next_limit(usage, floor, step)
        limits.append(usage)
    assert len(limits) <= RULE.max_steps
    assert limits[-1] == floor
    assert all(limit % PAGE_SIZE == 0 for limit in limits[:-1])
    assert all(a > b for a, b in itertools.pairwise(limits))
    # A small reclaimable part: steps of 5 % of usage, not more.
    assert step_size(100 * MIB, 99 * MIB, RULE) == 5 * MIB


def test_cold_cache_step_is_ok() -> None:
    # Recorded: limit 135094272, no stall, no refault over the 1 s hold.
    before = reading(0.0, 143245312, 0, 0)
    after = reading(1.005, 135032832, 0, 0)
    assert judge(before, after, RULE, wrote=True, at_floor=False) == "ok"
    assert judge(before, after, RULE, wrote=True, at_floor=True) == "floor"


def test_hot_cache_step_stops_at_the_stall() -> None:
    # Recorded on the hot workload's first step: 17.2 % of the hold stalled, 252876 refaults.
    before = reading(0.0, 140795904, 1_000_000, 10)
    after = reading(1.003, 132042752, 1_000_000 + 172_336, 10 + 252876)
    assert stall_share(before, after) == pytest.approx(0.1718, abs=1e-3)
    assert judge(before, after, RULE, wrote=True, at_floor=False) == "pressure"


def test_a_host_wide_stall_counts_only_with_the_cgroup_at_its_limit() -> None:
    # v1 reads the host's PSI. Recorded: 8.46 % of a step stalled while the probed cgroup
    # neither hit its limit (failcnt unchanged) nor refaulted: another workload's stall.
    before = reading(0.0, 169_600_000, 5_000_000, 0, hits=0)
    elsewhere = reading(1.0, 153_600_000, 5_000_000 + 84_600, 0, hits=0)
    assert judge(before, elsewhere, RULE, wrote=True, at_floor=False) == "pressure"
    assert judge(before, elsewhere, RULE, wrote=True, at_floor=False, host_wide=True) == "ok"
    # The hot workload's step: the cgroup hit its limit 5904 times while the host stalled.
    ours = reading(1.0, 132042752, 5_000_000 + 172_336, 0, hits=5904)
    assert judge(before, ours, RULE, wrote=True, at_floor=False, host_wide=True) == "pressure"


def test_refaults_alone_stop_the_probe() -> None:
    before = reading(0.0, 100 * MIB, None, 0)  # no PSI on this kernel
    quiet = reading(1.0, 95 * MIB, None, 10)
    hot = reading(1.0, 95 * MIB, None, 2 * MIB // PAGE_SIZE)
    assert judge(before, quiet, RULE, wrote=True, at_floor=False) == "ok"
    assert judge(before, hot, RULE, wrote=True, at_floor=False) == "refaults"


def test_oom_and_refusal_come_before_pressure() -> None:
    before = reading(0.0, 100 * MIB, 0, 0)
    waiting = reading(1.0, 90 * MIB, 900_000, 0, under=True)
    killed = reading(1.0, 90 * MIB, 0, 0, oom=1)
    assert judge(before, waiting, RULE, wrote=True, at_floor=False) == "oom"
    assert judge(before, killed, RULE, wrote=True, at_floor=False) == "oom"
    assert judge(before, reading(1.0, 99 * MIB, 0, 0), RULE, wrote=False, at_floor=False) == (
        "refused"
    )


def test_state_file_round_trip_and_restore(tmp_path: Path) -> None:
    knob = tmp_path / "memory.limit_in_bytes"
    knob.write_text("1234")
    other = tmp_path / "memory.oom_control"
    other.write_text("1")
    saved = (SavedKnob(knob, "9223372036854771712"), SavedKnob(other, "0"))
    path = write_state(saved, tmp_path / "run")
    (state,) = read_states(tmp_path / "run")
    assert state.path == path and state.knobs == saved
    assert state.maker.pid == os.getpid()
    gone = SavedKnob(tmp_path / "removed" / "memory.high", "max")  # its cgroup was removed
    assert restore_knobs((*saved, gone)) == []
    assert knob.read_text() == "9223372036854771712" and other.read_text() == "0"


def test_next_run_restores_a_dead_runs_knobs(tmp_path: Path) -> None:
    knob = tmp_path / "memory.high"
    knob.write_text("52428800")
    folder = tmp_path / "run"
    path = write_state((SavedKnob(knob, "max"),), folder)
    # This process is alive: its state file is left alone.
    assert leftovers.restore_dead_probes(folder) == []
    assert knob.read_text() == "52428800"
    # Rewritten as a process that has exited since (a SIGKILLed run).
    child = subprocess.Popen(["true"])
    child.wait()
    text = path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {child.pid}')
    path.write_text(text)
    (line,) = leftovers.restore_dead_probes(folder)
    assert f"pid {child.pid}" in line and "memory.high = max" in line
    assert knob.read_text() == "max"
    assert not path.exists()


def test_probed_totals_replace_the_usage_of_probed_steps() -> None:
    def step(k: int, usage: int) -> LaunchStep:
        return LaunchStep(
            instances=k,
            sample=k - 1,
            taken_at=0.0,
            settle_seconds=0.0,
            system_total_bytes=usage,
            mem_available_bytes=0,
            members=(),
        )

    run = ProbeRun(
        instances=2,
        cgroup_path="/capplan-launch-1",
        version=1,
        knob="memory.limit_in_bytes",
        original="9223372036854771712",
        start_usage_bytes=212279296,
        floor_bytes=88612864,
        found_bytes=113491968,
        pressure_source="system",
        stopped="reached the floor",
        restored=True,
        steps=(),
    )
    steps = [step(1, 143245312), step(2, 212279296)]
    assert probed_totals(steps, [run]) == [143245312.0, 113491968.0]
    assert probed_totals(steps, []) == [143245312.0, 212279296.0]
    assert reclaimable_share(run) == pytest.approx(1 - 113491968 / 212279296)
    assert reclaimable_share(dataclasses.replace(run, start_usage_bytes=0)) == 0.0


def test_a_model_file_keeps_the_probe_and_old_files_read_without_one() -> None:
    from capacity import modelfile
    from capacity.codec import dumps
    from capacity.records import SCHEMA_VERSION, Probe, ProbeStep

    old = modelfile.load_estimate(Path(__file__).parents[2] / "models" / "demo.json")
    assert old.schema_version == 1 and old.probe is None  # saved before schema 2
    step = ProbeStep(
        limit_bytes=216_200_000,
        usage_bytes=215_600_000,
        some_avg10=7.08,
        stall_share=0.2856,
        refaults=0,
        limit_hits=0,
        verdict="ok",
        seconds=1.0,
    )
    run = ProbeRun(
        instances=3,
        cgroup_path="/i14probe-doc",
        version=1,
        knob="memory.limit_in_bytes",
        original="9223372036854771712",
        start_usage_bytes=231_600_000,
        floor_bytes=46_200_000,
        found_bytes=46_200_000,
        pressure_source="system",
        stopped="reached the floor",
        restored=True,
        steps=(step,),
    )
    probe = Probe(
        mode="attach",
        step_share=0.05,
        hold_seconds=1.0,
        stall_threshold=0.005,
        refault_threshold_bytes=MIB,
        runs=(run,),
    )
    new = dataclasses.replace(old, schema_version=SCHEMA_VERSION, probe=probe)
    import json

    again = modelfile.estimate_from_dict(json.loads(dumps(new)))
    assert again.probe == probe and again.schema_version == 2
    # The text report says what it did, the size found and the steps, host text escaped.
    from capacity.render.report import render_text

    shown = dataclasses.replace(
        new,
        probe=dataclasses.replace(probe, runs=(dataclasses.replace(run, cgroup_path="/x\x1b[2J"),)),
    )
    text = render_text(shown)
    assert "Pressure probe (--probe): lowered memory.limit_in_bytes of cgroup /x" in text
    assert "\x1b" not in text
    assert "reached the floor" in text and "the original value was written back" in text
    assert "ran in 44.1 MiB without pressure (its usage was 220.9 MiB)" in text
