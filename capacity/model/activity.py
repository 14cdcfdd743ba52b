"""Busy or idle: did the workers serve anything while capplan sampled?

A worker measured idle still shares the pages it inherited; one that serves copies them
(copy-on-write drift), so "measured idle" is worth a warning and "measured busy" is not.
Whether a load generator was given says little: real traffic may drive the workers without
one, and a load generator may miss them (wrong port, wrong socket). What the kernel counts
says it: each worker's CPU time (utime + stime, all its threads) and its main thread's
context switches, between the first and the last sample, for the workers present at both
(same pid and start time).

Idle servers are not motionless: the demo polls its parent five times a second, gunicorn's
workers touch a heartbeat file, event loops wake on timers. Such a wake costs a few
microseconds, so a worker counts as having run only when its CPU time grew by more than
those wakes explain: at least two clock ticks (20 ms at USER_HZ 100: one tick may be a
boundary crossed, /proc rounds accumulated run time down to ticks) and at least 0.1 % of a
CPU over the window; or when its main thread switched more than 20 times a second (a
server that waits for I/O, its CPU time too small to show).

Launch mode (``measure_instances``) starts one instance per step, so no instance but the
first is there at the first sample: each process is followed from the first sample it is
in (its instance's step, taken once its load generator started) to the last, over its own
window, by the same rule; an instance ran when any process of its tree ran. An instance
first read at the last sample (the last step, without ``--samples`` 2 or more) is not
followed.
"""

from __future__ import annotations

from collections.abc import Sequence

from capacity.records import Activity, ProcessMemory, Snapshot

# What idle wakes cannot explain (see the module docstring).
MIN_CPU_SECONDS = 0.02  # two ticks of USER_HZ 100
MIN_CPU_SHARE = 0.001  # of one CPU, over the window
MIN_SWITCHES_PER_SECOND = 20.0  # of the main thread


def _switches(process: ProcessMemory) -> int | None:
    if process.voluntary_switches is None or process.nonvoluntary_switches is None:
        return None
    return process.voluntary_switches + process.nonvoluntary_switches


def ran(cpu_seconds: float, switches: int, duration: float) -> bool:
    """Did one worker run in a window of ``duration`` seconds, more than idle wakes do?"""
    cpu_floor = max(MIN_CPU_SECONDS, MIN_CPU_SHARE * duration)
    return cpu_seconds >= cpu_floor - 1e-9 or switches > MIN_SWITCHES_PER_SECOND * duration


def measure(snapshots: Sequence[Snapshot]) -> Activity:
    """The workers' activity between the first and the last of ``snapshots``."""
    if len(snapshots) < 2:
        return Activity(
            state="unknown",
            note="one sample: whether the workers ran needs two (--samples 2 or more)",
        )
    first, last = snapshots[0], snapshots[-1]
    duration = last.taken_at - first.taken_at
    if duration <= 0:
        return Activity(state="unknown", note="the first and last samples were taken at once")
    before = {(p.pid, p.start_ticks): p for p in first.workers}
    pairs = [
        (before[(p.pid, p.start_ticks)], p)
        for p in last.workers
        if (p.pid, p.start_ticks) in before
    ]
    if not pairs:
        return Activity(
            state="unknown",
            duration_seconds=duration,
            note="no worker was present at both the first and the last sample",
        )
    cpu: list[float] = []
    switches: list[int] = []
    for old, new in pairs:
        old_switches, new_switches = _switches(old), _switches(new)
        if (
            old.cpu_seconds is None
            or new.cpu_seconds is None
            or old_switches is None
            or new_switches is None
        ):
            return Activity(
                state="unknown",
                workers=len(pairs),
                duration_seconds=duration,
                note="the workers' CPU time and context switches were not read",
            )
        cpu.append(max(new.cpu_seconds - old.cpu_seconds, 0.0))
        switches.append(max(new_switches - old_switches, 0))
    busy = sum(ran(c, s, duration) for c, s in zip(cpu, switches, strict=True))
    workers = len(pairs)
    total_cpu = sum(cpu)
    total_switches = sum(switches)
    started = len({(p.pid, p.start_ticks) for p in last.workers} - set(before))
    ended = len(set(before) - {(p.pid, p.start_ticks) for p in last.workers})
    churn = []
    if started:
        churn.append(f"{started} started")
    if ended:
        churn.append(f"{ended} exited")
    return Activity(
        state="busy" if busy else "idle",
        workers=workers,
        busy_workers=busy,
        duration_seconds=duration,
        cpu_seconds=total_cpu,
        cpu_per_worker=total_cpu / workers / duration,
        busiest_cpu=max(cpu) / duration,
        context_switches=total_switches,
        switches_per_second=total_switches / duration,
        switches_per_worker=total_switches / workers / duration,
        note=(
            f"other workers while sampling: {' and '.join(churn)} (not followed)" if churn else ""
        ),
    )


def measure_instances(snapshots: Sequence[Snapshot]) -> Activity:
    """Launch mode: the instances' activity, each process from the first of ``snapshots``
    it is in to the last (see the module docstring); ``ProcessMemory.instance`` says whose
    tree a process is in."""
    if len(snapshots) < 2:
        return Activity(
            state="unknown",
            unit="instance",
            note="one sample: whether the instances ran needs two",
        )
    last = snapshots[-1]
    duration = last.taken_at - snapshots[0].taken_at
    first_seen: dict[tuple[int, int], tuple[float, ProcessMemory]] = {}
    for snapshot in snapshots[:-1]:
        for p in snapshot.workers:
            first_seen.setdefault((p.pid, p.start_ticks), (snapshot.taken_at, p))
    # instance -> (cpu seconds, switches, longest window, ran)
    trees: dict[int, tuple[float, int, float, bool]] = {}
    unfollowed: set[int] = set()
    for new in last.workers:
        if new.instance is None:
            continue
        seen = first_seen.get((new.pid, new.start_ticks))
        if seen is None:
            unfollowed.add(new.instance)
            continue
        at, old = seen
        window = last.taken_at - at
        old_switches, new_switches = _switches(old), _switches(new)
        if (
            old.cpu_seconds is None
            or new.cpu_seconds is None
            or old_switches is None
            or new_switches is None
        ):
            return Activity(
                state="unknown",
                unit="instance",
                duration_seconds=duration,
                note="the instances' CPU time and context switches were not read",
            )
        if window <= 0:
            continue
        cpu = max(new.cpu_seconds - old.cpu_seconds, 0.0)
        switches = max(new_switches - old_switches, 0)
        total_cpu, total_switches, longest, busy = trees.get(new.instance, (0.0, 0, 0.0, False))
        trees[new.instance] = (
            total_cpu + cpu,
            total_switches + switches,
            max(longest, window),
            busy or ran(cpu, switches, window),
        )
    unfollowed -= set(trees)
    note = (
        f"instance {', '.join(map(str, sorted(unfollowed)))} first read at the last sample "
        "(not followed: --samples 2 or more follows every instance)"
        if unfollowed
        else ""
    )
    if not trees:
        return Activity(
            state="unknown",
            unit="instance",
            duration_seconds=duration,
            note=note or "no instance was present at two samples",
        )
    count = len(trees)
    cpu_rates = [c / d for c, _, d, _ in trees.values()]
    switch_rates = [s / d for _, s, d, _ in trees.values()]
    ran_count = sum(1 for *_, flag in trees.values() if flag)
    return Activity(
        state="busy" if ran_count else "idle",
        unit="instance",
        workers=count,
        busy_workers=ran_count,
        duration_seconds=duration,
        cpu_seconds=sum(c for c, *_ in trees.values()),
        cpu_per_worker=sum(cpu_rates) / count,
        busiest_cpu=max(cpu_rates),
        context_switches=sum(s for _, s, *_ in trees.values()),
        switches_per_second=sum(switch_rates),
        switches_per_worker=sum(switch_rates) / count,
        note=note,
    )
