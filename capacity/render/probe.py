"""The pressure probe (``--probe``, issue 14) as text: what it did, the size it found and
its steps, for the estimate's text report."""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from capacity.records import Estimate, Probe, ProbeRun
from capacity.units import format_bytes, format_in, pick_unit

_PRESSURE = {
    "cgroup": "the cgroup's memory.pressure",
    "system": "the host's /proc/pressure/memory (a v1 cgroup has no PSI of its own)",
    "none": "no PSI on this kernel: refaults only",
}


def probe_lines(e: Estimate, escape: Callable[[str], str]) -> list[str]:
    """The probe's block: the rule, one row per probe run, the last run's steps, and how
    the sizes enter the answer."""
    probe = e.probe
    if probe is None:
        return []
    if not probe.runs:
        return ["Pressure probe (--probe): no run was probed", ""]
    first = probe.runs[0]
    lines = [
        f"Pressure probe (--probe): lowered {first.knob} of cgroup {escape(first.cgroup_path)} "
        f"step by step while the workload ran ({probe.step_share:.0%} of usage or more per "
        f"step, each held {probe.hold_seconds:g} s), to stop at the first stall over "
        f"{probe.stall_threshold:.1%} of a step (PSI some, from {_PRESSURE[first.pressure_source]})"
        f" or file refaults over {format_bytes(probe.refault_threshold_bytes)}; "
        + (
            "the original value was written back."
            if all(run.restored for run in probe.runs)
            else "the original value could NOT be written back everywhere: check "
            + ", ".join(
                f"{r.knob} of {escape(r.cgroup_path)}" for r in probe.runs if not r.restored
            )
        ),
        _runs_table(probe),
        f"Steps with N = {probe.runs[-1].instances}:",
        _steps_table(probe.runs[-1]),
    ]
    lines += _answer(e, probe)
    lines.append("")
    return lines


def _runs_table(probe: Probe) -> str:
    runs = probe.runs
    unit = pick_unit([float(r.start_usage_bytes) for r in runs])
    rows = [
        [
            str(r.instances),
            format_in(r.start_usage_bytes, unit),
            format_in(r.floor_bytes, unit),
            format_in(r.found_bytes, unit),
            str(len(r.steps)),
            r.stopped,
        ]
        for r in runs
    ]
    return tabulate(
        rows,
        headers=[
            "N",
            f"usage\n{unit[0]}",
            f"floor\n{unit[0]}",
            f"found\n{unit[0]}",
            "steps",
            "how it ended",
        ],
        tablefmt="simple",
        disable_numparse=True,
        colalign=("right", "right", "right", "right", "right", "left"),
    )


def _steps_table(run: ProbeRun) -> str:
    if not run.steps:
        return "    (no step: the usage was already at the floor)"
    unit = pick_unit([float(s.limit_bytes) for s in run.steps])
    rows = [
        [
            format_in(s.limit_bytes, unit),
            format_in(s.usage_bytes, unit),
            "" if s.some_avg10 is None else f"{s.some_avg10:.2f}",
            "" if s.stall_share is None else f"{s.stall_share:.2%}",
            f"{s.refaults:,}",
            f"{s.limit_hits:,}",
            s.verdict,
        ]
        for s in run.steps
    ]
    return tabulate(
        rows,
        headers=[
            f"limit\n{unit[0]}",
            f"usage\n{unit[0]}",
            "some\navg10 %",
            "stalled",
            "refaults\npages",
            "limit\nhits",
            "verdict",
        ],
        tablefmt="simple",
        disable_numparse=True,
        colalign=("right", "right", "right", "right", "right", "right", "left"),
    )


def _answer(e: Estimate, probe: Probe) -> list[str]:
    if probe.mode == "launch":
        model = probe.model
        if model is None:
            return ["    The system side could not be fitted through the sizes found."]
        return [
            "    The system side is fitted through the sizes found (total(k) = found), not "
            f"the cgroup's usage: {format_bytes(model.per_instance_bytes)} per instance, "
            f"fixed {format_bytes(model.fixed_bytes)}."
        ]
    run = probe.runs[-1]
    fitted = e.model.fixed_bytes + e.workload.worker_count * e.model.per_instance_bytes
    lines = [
        f"    With {e.workload.worker_count} workers the cgroup ran in "
        f"{format_bytes(run.found_bytes)} without pressure (its usage was "
        f"{format_bytes(run.start_usage_bytes)}); the fit's total(N) there is "
        f"{format_bytes(fitted)}. One probe is one point: it is reported, not fitted."
    ]
    if run.found_bytes > fitted:
        lines.append(
            f"    The workload needs {format_bytes(run.found_bytes - fitted)} more than the fit "
            "counts at this N (page cache it reads, kernel memory): keep that much beside the "
            "reserve."
        )
    return lines
