"""From snapshots to the points the model fits: what each worker adds, what is paid once.

The smaps method, per sample:

* a worker's marginal cost ``m`` is what the host gets back when it exits: its USS (and
  private hugetlb pages) plus its kernel memory (page tables, kernel stack, slab);
* the base paid once is the parents' own cost (USS and kernel) plus every page shared
  inside the workload counted once. smaps cannot say who shares a page, but the sum of
  ``PSS - USS`` over the workload is exactly its proportional share of shared pages: a page
  shared only by workload processes counts once, a library page shared with the rest of the
  host only by the workload's share of it.

Workers are taken in fork order (start time), so ``total(k)`` is the parent plus the
oldest ``k`` workers. Where the workload's cgroup holds nothing else, its measured slab
replaces our per-process estimate through a calibration factor.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from capacity.model import SamplePoints
from capacity.records import Breakdown, ProcessMemory, Snapshot

CALIBRATION_LIMITS = (0.2, 5.0)


def slab_calibration(snapshots: Sequence[Snapshot]) -> float | None:
    """Measured slab / estimated slab, from the workload's own cgroup; None without one."""
    factors = []
    for snap in snapshots:
        cgroup = snap.cgroup
        if cgroup is None or not cgroup.own:
            continue
        estimated = sum(p.slab_bytes for p in snap.processes)
        if estimated <= 0:
            continue
        if "slab_unreclaimable" in cgroup.stat:  # v2
            measured = cgroup.stat["slab_unreclaimable"]
        elif "kernel" in cgroup.stat:  # v1: kmem usage holds stacks and page tables too
            measured = (
                cgroup.stat["kernel"]
                - sum(p.page_tables_bytes for p in snap.processes)
                - sum(p.kernel_stack_bytes for p in snap.processes)
            )
        else:
            continue
        if measured > 0:
            factors.append(measured / estimated)
    if not factors:
        return None
    low, high = CALIBRATION_LIMITS
    return min(max(statistics.median(factors), low), high)


def marginal_cost(process: ProcessMemory, slab_factor: float = 1.0) -> int:
    return (
        process.rollup.uss_bytes
        + process.rollup.private_hugetlb_bytes
        + process.page_tables_bytes
        + process.kernel_stack_bytes
        + round(process.slab_bytes * slab_factor)
    )


def shared_once(processes: Sequence[ProcessMemory]) -> int:
    """The workload's proportional share of its shared pages, each counted once."""
    shared = sum(max(p.rollup.pss_bytes - p.rollup.uss_bytes, 0) for p in processes)
    # hugetlb pages are outside Pss (ps_mem #64): count a shared segment once.
    return shared + max((p.rollup.shared_hugetlb_bytes for p in processes), default=0)


def fork_order(processes: Sequence[ProcessMemory]) -> list[ProcessMemory]:
    return sorted(processes, key=lambda p: (p.start_ticks, p.pid))


def smaps_points(snapshots: Sequence[Snapshot], slab_factor: float = 1.0) -> list[SamplePoints]:
    points = []
    for snap in snapshots:
        parents_cost = sum(marginal_cost(p, slab_factor) for p in snap.parents)
        base = parents_cost + shared_once(snap.processes)
        increments = tuple(marginal_cost(w, slab_factor) for w in fork_order(snap.workers))
        points.append(SamplePoints(base=base, increments=increments))
    return points


def workload_totals(points: Sequence[SamplePoints]) -> list[int]:
    return [p.base + sum(p.increments) for p in points]


def smaps_breakdown(snapshots: Sequence[Snapshot], slab_factor: float | None) -> Breakdown:
    factor = 1.0 if slab_factor is None else slab_factor

    def mean(values: list[float]) -> int:
        return round(statistics.fmean(values)) if values else 0

    workers = [w for snap in snapshots for w in snap.workers]
    parents = [(snap, snap.parents) for snap in snapshots]
    return Breakdown(
        per_instance_uss_bytes=mean(
            [w.rollup.uss_bytes + w.rollup.private_hugetlb_bytes for w in workers]
        ),
        per_instance_page_tables_bytes=mean([w.page_tables_bytes for w in workers]),
        per_instance_kernel_stack_bytes=mean([w.kernel_stack_bytes for w in workers]),
        per_instance_slab_bytes=mean([w.slab_bytes * factor for w in workers]),
        kernel_source="estimate" if slab_factor is None else "cgroup",
        fixed_parent_bytes=mean([sum(p.rollup.uss_bytes for p in ps) for _, ps in parents]),
        fixed_shared_bytes=mean([shared_once(snap.processes) for snap in snapshots]),
        fixed_kernel_bytes=mean(
            [
                sum(p.kernel_bytes - p.slab_bytes + p.slab_bytes * factor for p in ps)
                for _, ps in parents
            ]
        ),
    )


# --------------------------------------------------------------------------- launch mode


def instance_costs(snapshot: Snapshot, slab_factor: float = 1.0) -> dict[int, tuple[int, int]]:
    """Launch mode, per instance: (cost, private bytes) over its process tree.

    A launched instance is a worker whose cost is its whole process tree: every process's
    USS and kernel memory, plus its share of the pages it shares (PSS - USS). Pages shared
    inside the tree (a forking server's heap) come again with every instance; pages shared
    with the other instances (the program's file pages) are split between them, as PSS
    does. The costs add up to ``launch_total``.
    """
    costs: dict[int, tuple[int, int]] = {}
    for process in snapshot.processes:
        if process.instance is None:
            continue
        cost, private = costs.get(process.instance, (0, 0))
        costs[process.instance] = (
            cost + marginal_cost(process, slab_factor) + _shared_share(process),
            private + process.rollup.uss_bytes + process.rollup.private_hugetlb_bytes,
        )
    return costs


def _shared_share(process: ProcessMemory) -> int:
    return max(process.rollup.pss_bytes - process.rollup.uss_bytes, 0)


def launch_total(snapshot: Snapshot, slab_factor: float = 1.0) -> int:
    """Process-side total(N): pages shared inside the workload once, plus every instance."""
    members = [p for p in snapshot.processes if p.instance is not None]
    return shared_once(members) + sum(marginal_cost(p, slab_factor) for p in members)


def launch_breakdown(snapshot: Snapshot, slab_factor: float | None) -> Breakdown:
    """What one instance costs, by kind (means over the instances of one snapshot); the
    fit's intercept, not this, says what is paid once."""
    factor = 1.0 if slab_factor is None else slab_factor
    trees: dict[int, list[ProcessMemory]] = {}
    for process in snapshot.processes:
        if process.instance is not None:
            trees.setdefault(process.instance, []).append(process)

    def mean(value: Callable[[ProcessMemory], float]) -> int:
        sums = [sum(value(p) for p in tree) for tree in trees.values()]
        return round(statistics.fmean(sums)) if sums else 0

    return Breakdown(
        per_instance_uss_bytes=mean(lambda p: p.rollup.uss_bytes + p.rollup.private_hugetlb_bytes),
        per_instance_shared_bytes=mean(_shared_share),
        per_instance_page_tables_bytes=mean(lambda p: p.page_tables_bytes),
        per_instance_kernel_stack_bytes=mean(lambda p: p.kernel_stack_bytes),
        per_instance_slab_bytes=mean(lambda p: p.slab_bytes * factor),
        kernel_source="estimate" if slab_factor is None else "cgroup",
        fixed_parent_bytes=0,
        fixed_shared_bytes=0,
        fixed_kernel_bytes=0,
    )
