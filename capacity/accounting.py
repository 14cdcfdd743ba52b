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

The exact method, on the samples that carry an exact page walk (``Snapshot.pages``):
``total(k)`` is the true number of distinct physical pages of the parents plus the first
``k`` workers, leaving out pages shared with processes outside the workload (reported
apart), plus the same kernel memory (page tables, kernel stack, slab) as above. The base is
``total(0)`` and worker k's increment ``total(k) - total(k-1)``, so ``model.fit`` takes
both methods' points alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

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


def kernel_cost(process: ProcessMemory, slab_factor: float = 1.0) -> int:
    """The kernel memory a process costs beyond its pages: page tables, stack, slab."""
    return (
        process.page_tables_bytes
        + process.kernel_stack_bytes
        + round(process.slab_bytes * slab_factor)
    )


def exact_snapshots(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """The samples that carry a usable exact walk (at least one worker walked)."""
    return [
        s for s in snapshots if s.pages is not None and len(s.pages.pids) > s.pages.parent_count
    ]


def exact_points(snapshots: Sequence[Snapshot], slab_factor: float = 1.0) -> list[SamplePoints]:
    points = []
    for snap in exact_snapshots(snapshots):
        pages = snap.pages
        assert pages is not None
        by_pid = {p.pid: p for p in snap.processes}
        kernel = [kernel_cost(by_pid[pid], slab_factor) for pid in pages.pids]
        totals = pages.cumulative_bytes
        base = totals[0] + sum(kernel[: pages.parent_count])
        increments = tuple(
            totals[k] - totals[k - 1] + kernel[pages.parent_count + k - 1]
            for k in range(1, len(totals))
        )
        points.append(SamplePoints(base=base, increments=increments))
    return points


def exact_breakdown(snapshots: Sequence[Snapshot], slab_factor: float | None) -> Breakdown:
    """The smaps breakdown's shape, with the page parts from the exact walks."""
    factor = 1.0 if slab_factor is None else slab_factor
    usable = exact_snapshots(snapshots)

    def mean(values: Sequence[float]) -> int:
        return round(statistics.fmean(values)) if values else 0

    increments: list[int] = []
    tables: list[int] = []
    stacks: list[int] = []
    slabs: list[float] = []
    parent_kernel: list[int] = []
    for snap in usable:
        pages = snap.pages
        assert pages is not None
        by_pid = {p.pid: p for p in snap.processes}
        totals = pages.cumulative_bytes
        increments.extend(totals[k] - totals[k - 1] for k in range(1, len(totals)))
        workers = [by_pid[pid] for pid in pages.pids[pages.parent_count :]]
        tables.extend(w.page_tables_bytes for w in workers)
        stacks.extend(w.kernel_stack_bytes for w in workers)
        slabs.extend(w.slab_bytes * factor for w in workers)
        parent_kernel.append(
            sum(kernel_cost(by_pid[pid], factor) for pid in pages.pids[: pages.parent_count])
        )
    return Breakdown(
        per_instance_uss_bytes=mean(increments),
        per_instance_page_tables_bytes=mean(tables),
        per_instance_kernel_stack_bytes=mean(stacks),
        per_instance_slab_bytes=mean(slabs),
        kernel_source="estimate" if slab_factor is None else "cgroup",
        fixed_parent_bytes=mean([s.pages.parent_only_bytes for s in usable if s.pages]),
        fixed_shared_bytes=mean([s.pages.shared_with_parent_bytes for s in usable if s.pages]),
        fixed_kernel_bytes=mean(parent_kernel),
        shared_outside_bytes=mean([s.pages.shared_outside_bytes for s in usable if s.pages]),
        shared_outside_pss_bytes=mean(
            [s.pages.shared_outside_pss_bytes for s in usable if s.pages]
        ),
    )


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
