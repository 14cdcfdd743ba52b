"""Warnings as values: what the reader should know, each ending with what to run next.

As in hyperfine's ``Warnings`` and pyperf's stability checks, a warning carries a stable
code (for scripts), one sentence, and a hint with the next command. The hint depends on the
options already in use, so we never suggest what the user already did.
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from collections.abc import Sequence

from capacity.model.drift import sampling_advice
from capacity.model.suggest import recognise, server_kind
from capacity.records import (
    Activity,
    Budget,
    Drift,
    Environment,
    ExactFallback,
    Launch,
    LoadRun,
    ModelFit,
    Notice,
    Prediction,
    Snapshot,
    Workload,
)
from capacity.units import format_bytes


def fallback_warning(fallback: ExactFallback, rerun: str, message: str) -> Notice:
    """EXACT_FALLBACK, for estimate and inspect alike: the hint follows the cause (the
    measurement's own, e.g. ``--deep`` for a workload over the thresholds, else root)."""
    return Notice(
        code="EXACT_FALLBACK",
        message=message,
        hint=fallback.hint
        or f"run as root for exact page accounting (sudo {rerun}), "
        "or pass --method smaps to choose smaps and silence this",
    )


def low_confidence(model: ModelFit, hint: str) -> list[Notice]:
    """LOW_CONFIDENCE when the fit says so; the advice (``hint``) differs by mode."""
    if model.confidence != "low":
        return []
    return [
        Notice(
            code="LOW_CONFIDENCE",
            message="low confidence: " + "; ".join(model.confidence_reasons),
            hint=hint,
        )
    ]


SPREAD_WARNING = 0.10  # pyperf warns when the standard deviation is over 10 % of the mean
HTTP_SERVERS = ("apache2", "php-fpm", "gunicorn", "uwsgi", "nginx", "puma", "unicorn")


def load_hint(workload: Workload | None, rerun: str, server: str | None = None) -> str:
    """What to run to measure the workload while it serves, with a load generator that
    fits the server: pgbench for PostgreSQL, ab (or hey) for HTTP servers, and for a
    program capplan does not recognise no command at all (a wrong one would mislead).
    ``server``, the roles rule that classified the workload, wins where it is known."""
    kind = None
    software = None
    if workload is not None:
        kind = server_kind(workload.name, workload.exe, workload.parent_cmdline)
        software = recognise(workload.name, workload.exe, workload.parent_cmdline)
    if server == "postgresql":
        kind = "database"
    elif server in HTTP_SERVERS:
        kind, software = "http", server
    if kind == "database":
        return (
            "measure while pgbench drives it, until it flattens: create its tables once "
            "(pgbench -i -s 10 bench), then "
            f"{rerun} --load 'pgbench -c 8 -j 2 -T 600 bench' --samples 30 "
            "(add -h, -p and -U as for psql)"
        )
    if kind == "http":
        where = (
            "through the web server in front of php-fpm, at a PHP page"
            if software == "php-fpm"
            else "at a page it serves"
        )
        return (
            f"measure while a load generator drives it ({where}), until it flattens: "
            f"{rerun} --load 'ab -n 100000 -c 8 http://127.0.0.1:PORT/' --samples 30 "
            "(or hey: --load 'hey -z 60s -c 8 http://127.0.0.1:PORT/')"
        )
    return f"put it under its usual load and measure again while it serves: {rerun} --samples 30"


def diagnose(
    snapshots: Sequence[Snapshot],
    model: ModelFit,
    budget: Budget,
    prediction: Prediction,
    environment: Environment,
    *,
    selector: str,
    samples_requested: int,
    under_load: bool = False,
    exact_fallback: ExactFallback | None = None,
    advise_confidence: bool = True,
    activity: Activity | None = None,
    workload: Workload | None = None,
    server: str | None = None,
) -> list[Notice]:
    """The warnings every estimate may carry. ``advise_confidence`` False leaves
    LOW_CONFIDENCE out, for a caller whose advice differs (``diagnose_launch``).
    ``activity`` says whether the workers ran while sampled (None: not known); ``workload``
    names the server, for the load generator a hint proposes; ``server`` is the rule that
    classified it (``measure/roles``), which names it more surely where it is known."""
    warnings: list[Notice] = []
    rerun = f"capplan estimate {selector}"

    if exact_fallback is not None:
        warnings.append(
            fallback_warning(
                exact_fallback, rerun, f"fell back to the smaps method: {exact_fallback.reason}"
            )
        )

    skipped = Counter(s.reason for snap in snapshots for s in snap.skipped)
    if skipped:
        listing = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        warnings.append(
            Notice(
                code="SKIPPED_PROCESSES",
                message=f"skipped while reading: {listing} (counted, not measured)",
                hint=f"if the workload was restarting, measure it once it is steady: {rerun}",
            )
        )

    if advise_confidence:
        warnings += low_confidence(
            model,
            f"measure more workers or more samples: {rerun} --samples {max(samples_requested * 2, 10)}",
        )

    if (
        model.per_instance_bytes > 0
        and model.worker_sd_bytes > SPREAD_WARNING * model.per_instance_bytes
    ):
        share = model.worker_sd_bytes / model.per_instance_bytes
        warnings.append(
            Notice(
                code="HIGH_SPREAD",
                message=(
                    f"workers differ: standard deviation {format_bytes(model.worker_sd_bytes)} "
                    f"is {share:.0%} of the per-worker cost"
                ),
                hint="busy workers grow; the conservative figure allows for the spread. "
                f"Sample longer to see it settle: {rerun} --samples {max(samples_requested * 4, 20)}",
            )
        )

    if model.breakdown is not None and model.breakdown.kernel_source == "estimate":
        warnings.append(
            Notice(
                code="KERNEL_ESTIMATED",
                message=(
                    "kernel memory per worker is partly estimated: page tables are read, "
                    "kernel stack and slab are computed from threads and mappings"
                ),
                hint=_calibration_hint(snapshots, workload),
            )
        )

    swapped = max(
        (sum(p.rollup.swap_bytes for p in snap.processes) for snap in snapshots), default=0
    )
    if swapped > 0:
        warnings.append(
            Notice(
                code="SWAP_IN_USE",
                message=f"{format_bytes(swapped)} of the workload is in swap: RAM figures leave it out",
                hint="measure when the host is not swapping, or size with swap disabled (swapoff -a)",
            )
        )

    if environment.thp_enabled == "always":
        warnings.append(
            Notice(
                code="THP_ALWAYS",
                message="transparent huge pages are 'always': one write after fork may copy 2 MiB",
                hint="measure under real load, where copy-on-write of huge pages shows",
            )
        )

    if any(p.source == "smaps" for snap in snapshots for p in snap.processes):
        warnings.append(
            Notice(
                code="NO_SMAPS_ROLLUP",
                message="this kernel has no smaps_rollup (before 4.14): PSS summed from smaps "
                "is truncated per mapping and reads low",
                hint="the per-worker cost (USS) is unaffected; upgrade the kernel for exact PSS",
            )
        )

    warnings += _idle_warnings(model, activity, under_load, load_hint(workload, rerun, server))

    if prediction.room_bytes <= 0:
        warnings.append(
            Notice(
                code="NO_ROOM",
                message="the fixed cost alone does not fit the budget after the reserve",
                hint="give the target host's size with --memory, or a smaller --reserve",
            )
        )

    if budget.source.startswith("memory limit of cgroup"):
        warnings.append(
            Notice(
                code="BUDGET_FROM_CGROUP",
                message=f"the budget is the cgroup's memory limit ({format_bytes(budget.total_bytes)}), "
                "smaller than the host",
                hint="size for the whole host with --memory",
            )
        )
    return warnings


def _calibration_hint(snapshots: Sequence[Snapshot], workload: Workload | None) -> str:
    """Why no cgroup calibrated the kernel part, where the selection named one."""
    selected = workload.cgroup if workload is not None else None
    if selected is None or not snapshots:
        return (
            "run the workload in a cgroup of its own (a systemd service has one) "
            "and capplan calibrates it from memory.stat"
        )
    found = snapshots[-1].cgroup
    if found is None or found.path != selected:
        return (
            f"no memory controller accounts the selected cgroup {selected} here: on cgroup "
            "v1 the memory hierarchy needs a cgroup of the same path (systemd: "
            "MemoryAccounting=yes), on v2 its parent must enable memory in "
            "cgroup.subtree_control"
        )
    return (
        f"the selected cgroup {selected} also holds processes outside the selection "
        "(capplan itself, or ones that started meanwhile): select a cgroup that holds the "
        "workload alone"
    )


def _idle_warnings(
    model: ModelFit, activity: Activity | None, under_load: bool, hint: str
) -> list[Notice]:
    """Measured idle (the workers did not run), or not known: copy-on-write drift is
    likely where the workers share more than each costs. A load generator that ran while
    the workers stayed idle missed them."""
    state = activity.state if activity is not None else "unknown"
    shared = model.breakdown.fixed_shared_bytes if model.breakdown else 0
    cow = (
        f"they share {format_bytes(shared)} copy-on-write and grow as they serve requests, "
        "so the per-worker cost may rise"
    )
    if state == "idle" and activity is not None:
        window = f"{activity.duration_seconds:.1f} s"
        if under_load:
            return [
                Notice(
                    code="LOAD_MISSED",
                    message=f"the load generator ran, but the {activity.workers} "
                    f"{activity.unit}s did not ({window} between the first and last sample): "
                    "its requests did not reach this workload, which was measured idle",
                    hint="check where it sends them (this workload's port, socket or "
                    "database): run it by hand and watch the workers' CPU time in top",
                )
            ]
        if shared > model.per_instance_bytes:
            return [
                Notice(
                    code="COW_DRIFT_LIKELY",
                    message=f"measured idle: the {activity.workers} workers did not run "
                    f"while capplan sampled ({window}); {cow}",
                    hint=hint,
                )
            ]
    if state == "unknown" and not under_load and shared > model.per_instance_bytes:
        why = activity.note if activity is not None and activity.note else "not measured"
        return [
            Notice(
                code="COW_DRIFT_LIKELY",
                message=f"whether the workers served anything while capplan sampled is not "
                f"known ({why}); {cow}",
                hint=hint,
            )
        ]
    return []


# --------------------------------------------------------------------------- load and drift

SUGGESTED_SAMPLES = 30
DIFFERENCE_WARNING = 0.10


def sampling_for(total_seconds: float, interval: float) -> tuple[int, float]:
    """``--samples K --interval I`` that cover ``total_seconds`` with about 30 samples."""
    interval = max(interval, total_seconds / SUGGESTED_SAMPLES, 0.1)
    interval = float(math.ceil(interval)) if interval >= 1 else round(interval, 1)
    return math.ceil(total_seconds / interval) + 1, interval


def diagnose_load_and_drift(
    drift: Drift | None,
    loads: Sequence[LoadRun],
    snapshots: Sequence[Snapshot],
    *,
    selector: str,
) -> list[Notice]:
    warnings: list[Notice] = []
    rerun = f"capplan estimate {selector}"
    last_at = snapshots[-1].taken_at if snapshots else 0.0
    first_at = snapshots[0].taken_at if snapshots else 0.0
    for run in loads:
        which = f" for instance {run.instance}" if run.instance is not None else ""
        command = shlex.join(run.command[2:] if run.shell else run.command)
        if run.exit_status not in (None, 0) and run.ended_at is not None:
            status = (
                f"was killed by signal {-run.exit_status}"
                if run.exit_status is not None and run.exit_status < 0
                else f"exited with status {run.exit_status}"
            )
            warnings.append(
                Notice(
                    code="LOAD_FAILED",
                    message=f"the load generator{which} {status} after "
                    f"{run.ended_at - run.started_at:.1f} s"
                    + (f": {run.stderr_tail}" if run.stderr_tail else "")
                    + "; the samples after that saw no load",
                    hint=f"run it by hand to see why: {command}",
                )
            )
        elif run.ended_at is not None and run.ended_at < last_at:
            idle = sum(1 for s in snapshots if s.taken_at > run.ended_at)
            warnings.append(
                Notice(
                    code="LOAD_ENDED_EARLY",
                    message=f"the load generator{which} finished "
                    f"{run.ended_at - first_at:.1f} s after the first sample: the last "
                    f"{idle} of {len(snapshots)} samples saw no load",
                    hint="give it more work (a larger ab -n) so that it runs through the sampling",
                )
            )
    if drift is not None and drift.growing and not drift.plateau:
        unit = drift.unit
        interval = drift.duration_seconds / max(drift.samples - 1, 1)
        more = drift.sample_more_seconds or 0.0
        samples, every = sampling_for(drift.duration_seconds + more, interval)
        warnings.append(
            Notice(
                code="DRIFT_NO_PLATEAU",
                message=(
                    f"each {unit} grew by {format_bytes(drift.growth_per_minute_bytes)}/min "
                    f"({format_bytes(drift.first_bytes)} at the first sample, "
                    f"{format_bytes(drift.last_bytes)} at the last) and had not flattened: "
                    f"the per-{unit} cost is a lower bound and max {unit}s an upper bound"
                ),
                hint=f"{sampling_advice(drift)}; under the same load: "
                f"{rerun} --samples {samples} --interval {every:g}",
            )
        )
    return warnings


def diagnose_launch(
    launch: Launch,
    model: ModelFit,
    *,
    selector: str,
    no_cgroup_reason: str | None,
    system_error: str | None,
) -> list[Notice]:
    warnings: list[Notice] = []
    rerun = f"capplan estimate {selector}"
    more = f"{rerun.rsplit(' --instances', 1)[0]} --instances {max(2 * launch.instances, 8)}"
    warnings += low_confidence(model, f"measure more instance counts: {more}")
    if no_cgroup_reason is not None:
        warnings.append(
            Notice(
                code="NO_CGROUP",
                message=f"no cgroup could be created ({no_cgroup_reason}): the system-side "
                "total is the host's MemAvailable delta, which also moves with everything "
                "else the host does",
                hint="run as root on a host with the memory controller for a cgroup per "
                "instance and the kernel's own accounting",
            )
        )
    if system_error is not None:
        warnings.append(
            Notice(
                code="SYSTEM_FIT_FAILED",
                message=f"the system-side totals give no line: {system_error}",
                hint="a quiet host (or a cgroup, as root) gives usable system-side figures",
            )
        )
    system = launch.system_model
    if system is not None and model.per_instance_bytes > 0:
        difference = system.per_instance_bytes - model.per_instance_bytes
        share = difference / model.per_instance_bytes
        if abs(share) > DIFFERENCE_WARNING:
            source = "the cgroup charged" if system.method == "cgroup" else "MemAvailable fell by"
            parts = ", ".join(
                f"{name} {'+' if value >= 0 else '-'}{format_bytes(abs(value))}"
                for name, value in sorted(launch.difference.items(), key=lambda kv: -abs(kv[1]))
                if abs(value) >= 0.05 * abs(difference)
            )
            warnings.append(
                Notice(
                    code="FITS_DIFFER",
                    message=(
                        f"{source} {format_bytes(system.per_instance_bytes)} per instance, "
                        f"the processes show {format_bytes(model.per_instance_bytes)} "
                        f"({share:+.0%})"
                        + (f"; per instance the difference is {parts}" if parts else "")
                    ),
                    hint="page cache is reclaimable, kernel memory and sockets are not; "
                    "where the host runs close to its limit, size with the larger figure "
                    "(--format json has both fits)",
                )
            )
    for check in launch.quadratic:
        if check.significant:
            warnings.append(
                Notice(
                    code="NOT_LINEAR",
                    message=(
                        f"total(N) ({check.method}) curves: a quadratic term adds "
                        f"{format_bytes(check.contribution_bytes)} at N = {check.at_instances:,} "
                        f"({check.share:+.0%} of the line's total there; p = {check.p_value:.3g})"
                        ": the cost of an instance grows with N"
                    ),
                    hint=f"measure at more instances, closer to the target: {more}",
                )
            )
    return warnings
