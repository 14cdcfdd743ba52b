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
from capacity.records import (
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


def load_example(server: str | None) -> str:
    """A ``--load`` command that drives this kind of server: pgbench for PostgreSQL, ab for
    an HTTP server, a placeholder when capplan does not know what the workload serves."""
    if server == "postgresql":
        return "'pgbench -c 8 -T 600 DBNAME'"
    if server is None or server in HTTP_SERVERS:
        return "'ab -n 100000 -c 8 http://127.0.0.1:PORT/'"
    return "'COMMAND THAT DRIVES IT'"


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
    server: str | None = None,
) -> list[Notice]:
    """The warnings every estimate may carry. ``advise_confidence`` False leaves
    LOW_CONFIDENCE out, for a caller whose advice differs (``diagnose_launch``).
    ``server`` is the rule that classified the workload (``measure/roles``: "postgresql",
    "apache2", ...), so that a hint names a load generator that fits it."""
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
                hint="run the workload in a cgroup of its own (a systemd service has one) "
                "and capplan calibrates it from memory.stat",
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

    if not under_load:
        shared = model.breakdown.fixed_shared_bytes if model.breakdown else 0
        if shared > model.per_instance_bytes:
            warnings.append(
                Notice(
                    code="COW_DRIFT_LIKELY",
                    message=(
                        "measured without load: workers share "
                        f"{format_bytes(shared)} copy-on-write and grow as they serve "
                        "requests, so the per-worker cost may rise"
                    ),
                    hint="measure while a load generator drives it, until it flattens: "
                    f"{rerun} --load {load_example(server)} --samples 30",
                )
            )

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
