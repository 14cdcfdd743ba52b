"""The usual sizing rules, applied to the same measurement so a reader sees why capplan differs.

Each rule divides the memory available to the workload by one per-process figure. None of
them separates what is paid once from what each worker adds, and none counts the kernel
memory every process costs; the notes say which way each one errs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from capacity.records import Budget, EstimatorResult, ModelFit, Prediction, Snapshot

NOTES = {
    "largest_rss": (
        "RAM / RSS of the largest worker (apache2buddy, top): counts every shared page "
        "once per worker, so it under-sizes"
    ),
    "rss_minus_shr": (
        "RAM / (RSS - SHR) as top shows it: pages inherited copy-on-write count as private, "
        "so it under-sizes forked workers"
    ),
    "pss": (
        "RAM / mean PSS (smem, ps_mem): shares shared pages among all processes, "
        "omits kernel memory and the fixed cost"
    ),
    "uss": (
        "RAM / mean USS: a worker's own pages only, without its page tables, kernel stack "
        "and slab, so it over-sizes"
    ),
    "capplan": "(budget - reserve - fixed) / marginal cost per worker: USS plus kernel memory",
}


def _fit(available: int, per_instance: float, fixed: int = 0) -> int:
    if per_instance <= 0:
        return 0
    room = available - fixed
    return max(0, math.floor(room / per_instance)) if room > 0 else 0


def compare(
    snapshots: Sequence[Snapshot], model: ModelFit, budget: Budget, prediction: Prediction
) -> dict[str, EstimatorResult]:
    workers = [w for snap in snapshots for w in snap.workers]
    available = budget.available_bytes
    if not workers:
        return {}
    largest = max(w.rollup.rss_bytes for w in workers)
    rss_shr = statistics.fmean(
        w.rollup.rss_bytes - w.rss_file_bytes - w.rss_shmem_bytes for w in workers
    )
    pss = statistics.fmean(w.rollup.pss_bytes for w in workers)
    uss = statistics.fmean(w.rollup.uss_bytes for w in workers)
    rules = {
        "largest_rss": largest,
        "rss_minus_shr": rss_shr,
        "pss": pss,
        "uss": uss,
    }
    results = {
        name: EstimatorResult(
            per_instance_bytes=round(value),
            max_instances=_fit(available, value),
            note=NOTES[name],
        )
        for name, value in rules.items()
    }
    results["capplan"] = EstimatorResult(
        per_instance_bytes=model.per_instance_bytes,
        max_instances=prediction.max_instances,
        fixed_bytes=model.fixed_bytes,
        note=NOTES["capplan"],
    )
    return results
