"""Warnings as values: what the reader should know, each ending with what to run next.

As in hyperfine's ``Warnings`` and pyperf's stability checks, a warning carries a stable
code (for scripts), one sentence, and a hint with the next command. The hint depends on the
options already in use, so we never suggest what the user already did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from capacity import gentle
from capacity.records import Budget, Environment, ModelFit, Prediction, Snapshot, Warning
from capacity.units import format_bytes

SPREAD_WARNING = 0.10  # pyperf warns when the standard deviation is over 10 % of the mean


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
    exact_fallback: str | None = None,
) -> list[Warning]:
    warnings: list[Warning] = []
    rerun = f"capplan estimate {selector}"

    if exact_fallback is not None:
        warnings.append(
            Warning(
                code="EXACT_FALLBACK",
                message=f"fell back to the smaps method: {exact_fallback}",
                hint=gentle.deep_hint(rerun)
                if gentle.is_refusal(exact_fallback)
                else f"run as root for exact page accounting (sudo {rerun}), "
                "or pass --method smaps to choose smaps and silence this",
            )
        )

    skipped = Counter(s.reason for snap in snapshots for s in snap.skipped)
    if skipped:
        listing = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        warnings.append(
            Warning(
                code="SKIPPED_PROCESSES",
                message=f"skipped while reading: {listing} (counted, not measured)",
                hint=f"if the workload was restarting, measure it once it is steady: {rerun}",
            )
        )

    if model.confidence == "low":
        warnings.append(
            Warning(
                code="LOW_CONFIDENCE",
                message="low confidence: " + "; ".join(model.confidence_reasons),
                hint=f"measure more workers or more samples: {rerun} --samples {max(samples_requested * 2, 10)}",
            )
        )

    if (
        model.per_instance_bytes > 0
        and model.worker_sd_bytes > SPREAD_WARNING * model.per_instance_bytes
    ):
        share = model.worker_sd_bytes / model.per_instance_bytes
        warnings.append(
            Warning(
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
            Warning(
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
            Warning(
                code="SWAP_IN_USE",
                message=f"{format_bytes(swapped)} of the workload is in swap: RAM figures leave it out",
                hint="measure when the host is not swapping, or size with swap disabled (swapoff -a)",
            )
        )

    if environment.thp_enabled == "always":
        warnings.append(
            Warning(
                code="THP_ALWAYS",
                message="transparent huge pages are 'always': one write after fork may copy 2 MiB",
                hint="measure under real load, where copy-on-write of huge pages shows",
            )
        )

    if any(p.source == "smaps" for snap in snapshots for p in snap.processes):
        warnings.append(
            Warning(
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
                Warning(
                    code="COW_DRIFT_LIKELY",
                    message=(
                        "measured without load: workers share "
                        f"{format_bytes(shared)} copy-on-write and grow as they serve "
                        "requests, so the per-worker cost may rise"
                    ),
                    hint=f"measure while the server is busy, over more samples: {rerun} --samples 30",
                )
            )

    if prediction.room_bytes <= 0:
        warnings.append(
            Warning(
                code="NO_ROOM",
                message="the fixed cost alone does not fit the budget after the reserve",
                hint="give the target host's size with --memory, or a smaller --reserve",
            )
        )

    if budget.source.startswith("memory limit of cgroup"):
        warnings.append(
            Warning(
                code="BUDGET_FROM_CGROUP",
                message=f"the budget is the cgroup's memory limit ({format_bytes(budget.total_bytes)}), "
                "smaller than the host",
                hint="size for the whole host with --memory",
            )
        )
    return warnings
