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
oldest ``k`` workers.

Two things are paid once but kept out of ``fixed``, because the kernel reclaims them before
its OOM killer fires (scripts/validate.py found both by driving real workloads into their
cgroup's limit; README's validation section has the figures):

* the page cache of the workload's own files (its binary, libraries, mapped data):
  ``Pss_File`` counted once, less what workers hold privately (their USS). MemAvailable
  counts it as available too, so the budget's reserve stays consistent. Left in ``fixed``,
  it made capplan 9 % short on php-fpm in a 128 MiB cgroup (10 MiB of libphp and friends);
* kernel memory the workload's own cgroup holds beyond what its processes' page tables,
  stacks and slab explain (dentries, inodes, sockets, on v1 all lumped into kmem).

Both are kept in ``reclaimable`` and counted by the conservative prediction only.

Where the workload's cgroup holds nothing else, its measured slab checks our per-process
estimate. The check may only lower the estimate (factor <= 1): the cgroup's kernel memory
is an upper bound on its processes' slab, not a measure of it, and scaling every worker's
estimate up by it smeared that once-only kernel memory over the workers (+16 KiB, 4.5 %
per apache2 worker, measured against the cgroup's slope over 10..170 workers).

The exact method, on the samples that carry an exact page walk (``Snapshot.pages``):
``total(k)`` is the true number of distinct physical pages of the parents plus the first
``k`` workers, leaving out pages shared with processes outside the workload (reported
apart) and, as above, the file pages paid once (page cache, reclaimable), plus the same
kernel memory (page tables, kernel stack, slab). The base is ``total(0)`` and worker k's
increment ``total(k) - total(k-1)``, so ``fitting.fit`` takes both methods' points alike.

Shared memory segments (issue 14, ``model/shmem``), both methods: a segment's pages one
worker alone maps move from its increment to the base (a segment is paid once), and with
``shm="configured"`` the base holds each segment at its configured size (``"auto"``, the
default, as touched: the conservative answer keeps the rest, ``ModelFit.shm_kept_bytes``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from capacity.model import shmem
from capacity.model.fitting import SamplePoints
from capacity.records import (
    Breakdown,
    Method,
    ProcessCost,
    ProcessMemory,
    SlabCalibration,
    Snapshot,
)
from capacity.shmem_records import ShmChoice

UNCALIBRATED = SlabCalibration.UNCALIBRATED

# The cgroup may lower the slab estimate (never below a fifth of it) but never raise it.
CALIBRATION_LIMITS = (0.2, 1.0)


def measured_slab(snap: Snapshot) -> int | None:
    """Slab the workload's own cgroup holds, or None without such a cgroup."""
    cgroup = snap.cgroup
    if cgroup is None or not cgroup.own:
        return None
    if "slab_unreclaimable" in cgroup.stat:  # v2
        return cgroup.stat["slab_unreclaimable"]
    if "kernel" in cgroup.stat:  # v1: kmem usage holds stacks and page tables too
        return (
            cgroup.stat["kernel"]
            - sum(p.page_tables_bytes for p in snap.processes)
            - sum(p.kernel_stack_bytes for p in snap.processes)
        )
    return None


def slab_calibration(snapshots: Sequence[Snapshot]) -> SlabCalibration:
    """Measured slab / estimated slab, at most 1, from the workload's own cgroup; the
    estimate as it is (``UNCALIBRATED``) without one."""
    factors = []
    for snap in snapshots:
        measured = measured_slab(snap)
        estimated = sum(p.slab_bytes for p in snap.processes)
        if measured is not None and measured > 0 and estimated > 0:
            factors.append(measured / estimated)
    if not factors:
        return UNCALIBRATED
    low, high = CALIBRATION_LIMITS
    return SlabCalibration(factor=min(max(statistics.median(factors), low), high), source="cgroup")


def process_cost(
    process: ProcessMemory, calibration: SlabCalibration = UNCALIBRATED
) -> ProcessCost:
    """What the host gets back when ``process`` exits, by part: the one definition of a
    worker's cost (USS + private hugetlb + page tables + kernel stack + calibrated slab)."""
    return ProcessCost(
        uss_bytes=process.rollup.uss_bytes,
        private_hugetlb_bytes=process.rollup.private_hugetlb_bytes,
        page_tables_bytes=process.page_tables_bytes,
        kernel_stack_bytes=process.kernel_stack_bytes,
        calibrated_slab=process.slab_bytes * calibration.factor,
    )


def unexplained_kernel(snap: Snapshot, calibration: SlabCalibration = UNCALIBRATED) -> int:
    """Kernel memory the workload's own cgroup holds beyond its processes' slab estimate."""
    measured = measured_slab(snap)
    if measured is None:
        return 0
    explained = sum(process_cost(p, calibration).slab_bytes for p in snap.processes)
    return max(0, measured - explained)


def private_file(process: ProcessMemory) -> int:
    """A process's file pages mapped by it alone (Private_Clean: on a host without swap,
    clean private pages are file pages)."""
    return min(process.rollup.private_clean_bytes, process.rollup.pss_file_bytes)


def shared_file_once(processes: Sequence[ProcessMemory]) -> int:
    """The workload's proportional share of its shared file pages, each counted once."""
    return sum(max(p.rollup.pss_file_bytes - private_file(p), 0) for p in processes)


def file_cache_once(snap: Snapshot) -> int:
    """The page cache of the workload's files, counted once, outside the workers' USS.

    ``Pss_File`` (Linux 5.3+; 0 before, which keeps the old, larger fixed cost) shares each
    file page among the processes mapping it. A worker's private file pages are in its USS,
    the marginal cost, so they are not counted twice; the parents' are counted here.
    """
    return sum(private_file(p) for p in snap.parents) + shared_file_once(snap.processes)


def shared_once(processes: Sequence[ProcessMemory]) -> int:
    """The workload's proportional share of its shared pages, each counted once."""
    shared = sum(max(p.rollup.pss_bytes - p.rollup.uss_bytes, 0) for p in processes)
    # hugetlb pages are outside Pss (ps_mem #64): count a shared segment once.
    return shared + max((p.rollup.shared_hugetlb_bytes for p in processes), default=0)


def fork_order(processes: Sequence[ProcessMemory]) -> list[ProcessMemory]:
    return sorted(processes, key=lambda p: (p.start_ticks, p.pid))


def points_for(
    method: Method,
    snapshots: Sequence[Snapshot],
    calibration: SlabCalibration = UNCALIBRATED,
    shm: ShmChoice | None = "auto",
) -> list[SamplePoints]:
    """The fit's points as ``method`` counts them: the one choice estimate and inspect share.
    ``shm`` counts shared memory segments at their configured size or as touched (None:
    as the pages fall, the worker's own segment pages in its increment)."""
    if method == Method.EXACT:
        return exact_points(snapshots, calibration, shm)
    return smaps_points(snapshots, calibration, shm)


def smaps_points(
    snapshots: Sequence[Snapshot],
    calibration: SlabCalibration = UNCALIBRATED,
    shm: ShmChoice | None = "auto",
) -> list[SamplePoints]:
    points = []
    for snap in snapshots:
        parents_cost = sum(process_cost(p, calibration).total_bytes for p in snap.parents)
        workers = fork_order(snap.workers)
        moved = [shmem.worker_shm(w, shm) for w in workers]
        base = max(
            parents_cost + shared_once(snap.processes) - file_cache_once(snap),
            # never below the parents' kernel memory, as estimated (not calibrated)
            sum(process_cost(p).kernel_bytes for p in snap.parents),
        ) + (sum(moved) + shmem.untouched(snap, shm))
        increments = tuple(
            process_cost(w, calibration).total_bytes - own_shm
            for w, own_shm in zip(workers, moved, strict=True)
        )
        points.append(SamplePoints(base=base, increments=increments))
    return points


def exact_snapshots(snapshots: Sequence[Snapshot]) -> list[Snapshot]:
    """The samples that carry a usable exact walk (at least one worker walked)."""
    return [
        s for s in snapshots if s.pages is not None and len(s.pages.pids) > s.pages.parent_count
    ]


def exact_points(
    snapshots: Sequence[Snapshot],
    calibration: SlabCalibration = UNCALIBRATED,
    shm: ShmChoice | None = "auto",
) -> list[SamplePoints]:
    points = []
    for snap in exact_snapshots(snapshots):
        pages = snap.pages
        assert pages is not None
        by_pid = {p.pid: p for p in snap.processes}
        # The page walk counts the pages; the kernel part is the processes' own.
        kernel = [process_cost(by_pid[pid], calibration).kernel_bytes for pid in pages.pids]
        totals = pages.cumulative_bytes
        parent_kernel = sum(kernel[: pages.parent_count])
        worker_kernel = kernel[pages.parent_count :]
        # File pages paid once are page cache the kernel reclaims before an OOM kill: kept
        # out of fixed, as in the smaps method (``exact_reclaimable_once`` counts them).
        if len(pages.worker_private_bytes) == len(worker_kernel):
            # A worker adds the pages it alone maps. Pages that workers share without the
            # parent (the parent has since written its own copy) are paid once, in the base,
            # where smaps's PSS - USS puts them too: charged to the first worker that maps
            # them, they would make that worker look huge and widen every interval.
            # A segment's pages a worker alone maps are paid once too (issue 14).
            private = exact_private(snap, shm)
            charged = totals[-1] - sum(private) - pages.file_once_bytes
            base = max(charged + parent_kernel, parent_kernel) + shmem.untouched(snap, shm)
            increments = tuple(p + k for p, k in zip(private, worker_kernel, strict=True))
        else:  # a walk saved before worker_private_bytes existed
            base = max(
                totals[0] + parent_kernel - pages.file_once_bytes, parent_kernel
            ) + shmem.untouched(snap, shm)
            increments = tuple(
                totals[k] - totals[k - 1] + worker_kernel[k - 1] for k in range(1, len(totals))
            )
        points.append(SamplePoints(base=base, increments=increments))
    return points


def exact_private(snap: Snapshot, shm: ShmChoice | None) -> tuple[int, ...]:
    """The exact walk's pages each worker alone maps, less its own segment pages (which
    ``shm`` None leaves in)."""
    pages = snap.pages
    assert pages is not None
    by_pid = {p.pid: p for p in snap.processes}
    workers = pages.pids[pages.parent_count :]
    return tuple(
        max(own - shmem.worker_shm(by_pid[pid], shm), 0)
        for own, pid in zip(pages.worker_private_bytes, workers, strict=True)
    )


def exact_breakdown(
    snapshots: Sequence[Snapshot],
    calibration: SlabCalibration = UNCALIBRATED,
    shm: ShmChoice | None = "auto",
) -> Breakdown:
    """The smaps breakdown's shape, with the page parts from the exact walks."""
    usable = exact_snapshots(snapshots)

    def mean(values: Sequence[float]) -> int:
        return round(statistics.fmean(values)) if values else 0

    increments: list[int] = []
    tables: list[int] = []
    stacks: list[int] = []
    slabs: list[float] = []
    parent_kernel: list[int] = []
    moved: list[int] = []
    for snap in usable:
        pages = snap.pages
        assert pages is not None
        by_pid = {p.pid: p for p in snap.processes}
        totals = pages.cumulative_bytes
        costs = [process_cost(by_pid[pid], calibration) for pid in pages.pids]
        workers = costs[pages.parent_count :]
        if len(pages.worker_private_bytes) == len(workers):
            private = exact_private(snap, shm)
            increments.extend(private)
            moved.append(sum(pages.worker_private_bytes) - sum(private))
        else:
            increments.extend(totals[k] - totals[k - 1] for k in range(1, len(totals)))
        tables.extend(w.page_tables_bytes for w in workers)
        stacks.extend(w.kernel_stack_bytes for w in workers)
        slabs.extend(w.calibrated_slab for w in workers)
        parent_kernel.append(sum(c.kernel_bytes for c in costs[: pages.parent_count]))
    return Breakdown(
        per_instance_uss_bytes=mean(increments),
        per_instance_page_tables_bytes=mean(tables),
        per_instance_kernel_stack_bytes=mean(stacks),
        per_instance_slab_bytes=mean(slabs),
        kernel_source=calibration.source,
        fixed_parent_bytes=mean(
            [s.pages.parent_only_bytes - s.pages.file_parent_only_bytes for s in usable if s.pages]
        ),
        fixed_shared_bytes=mean(
            [
                s.pages.shared_with_parent_bytes
                + s.pages.shared_workers_bytes
                - (s.pages.file_once_bytes - s.pages.file_parent_only_bytes)
                for s in usable
                if s.pages
            ]
        )
        + mean(moved),
        fixed_shm_untouched_bytes=mean([shmem.untouched(s, shm) for s in usable]),
        fixed_file_bytes=mean([s.pages.file_once_bytes for s in usable if s.pages]),
        fixed_unexplained_kernel_bytes=mean([unexplained_kernel(s, calibration) for s in usable]),
        fixed_kernel_bytes=mean(parent_kernel),
        shared_outside_bytes=mean([s.pages.shared_outside_bytes for s in usable if s.pages]),
        shared_outside_pss_bytes=mean(
            [s.pages.shared_outside_pss_bytes for s in usable if s.pages]
        ),
    )


def exact_reclaimable_once(
    snapshots: Sequence[Snapshot], calibration: SlabCalibration = UNCALIBRATED
) -> int:
    """``reclaimable_once`` for the exact method: the file pages paid once, counted from the
    page walk, and the kernel memory the cgroup holds beyond the workload's processes."""
    values = [
        s.pages.file_once_bytes + unexplained_kernel(s, calibration)
        for s in exact_snapshots(snapshots)
        if s.pages is not None
    ]
    return round(statistics.fmean(values)) if values else 0


def reclaimable_once(
    snapshots: Sequence[Snapshot], calibration: SlabCalibration = UNCALIBRATED
) -> int:
    """Paid once, reclaimable before an OOM kill: page cache of the workload's files and
    the kernel memory its cgroup holds beyond its processes (mean over samples)."""
    values = [file_cache_once(s) + unexplained_kernel(s, calibration) for s in snapshots]
    return round(statistics.fmean(values)) if values else 0


def layout_allowance(snapshots: Sequence[Snapshot], page_size: int) -> int:
    """Per worker: one page-table page per region of its address space (mean over workers).

    Every instance of a program gets a new random layout (ASLR), and each region may straddle
    one more page-table boundary there: apache2 prefork workers measured 44 to 56 KiB of page
    tables across six fresh instances, 40 KiB in each with ASLR off. The workers of one
    instance share their parent's layout, so their spread cannot show this; the
    conservative prediction adds it for each of the N workers.
    """
    regions = [w.address_regions for s in snapshots for w in s.workers if w.address_regions]
    return round(statistics.fmean(regions) * page_size) if regions else 0


def workload_totals(points: Sequence[SamplePoints]) -> list[int]:
    return [p.base + sum(p.increments) for p in points]


def smaps_breakdown(
    snapshots: Sequence[Snapshot],
    calibration: SlabCalibration = UNCALIBRATED,
    shm: ShmChoice | None = "auto",
) -> Breakdown:
    def mean(values: Sequence[float]) -> int:
        return round(statistics.fmean(values)) if values else 0

    own = [
        process_cost(w, calibration).own_bytes - shmem.worker_shm(w, shm)
        for snap in snapshots
        for w in snap.workers
    ]
    workers = [process_cost(w, calibration) for snap in snapshots for w in snap.workers]
    parents = [snap.parents for snap in snapshots]
    return Breakdown(
        per_instance_uss_bytes=mean(own),
        per_instance_page_tables_bytes=mean([w.page_tables_bytes for w in workers]),
        per_instance_kernel_stack_bytes=mean([w.kernel_stack_bytes for w in workers]),
        per_instance_slab_bytes=mean([w.calibrated_slab for w in workers]),
        kernel_source=calibration.source,
        fixed_parent_bytes=mean(
            [sum(p.rollup.uss_bytes - private_file(p) for p in ps) for ps in parents]
        ),
        fixed_shared_bytes=mean(
            [
                shared_once(snap.processes)
                - shared_file_once(snap.processes)
                + sum(shmem.worker_shm(w, shm) for w in snap.workers)
                for snap in snapshots
            ]
        ),
        fixed_shm_untouched_bytes=mean([shmem.untouched(snap, shm) for snap in snapshots]),
        fixed_file_bytes=mean([file_cache_once(snap) for snap in snapshots]),
        fixed_unexplained_kernel_bytes=mean(
            [unexplained_kernel(snap, calibration) for snap in snapshots]
        ),
        # the slab unrounded, as the means above take it
        fixed_kernel_bytes=mean(
            [
                sum(
                    c.page_tables_bytes + c.kernel_stack_bytes + c.calibrated_slab
                    for c in (process_cost(p, calibration) for p in ps)
                )
                for ps in parents
            ]
        ),
    )


# --------------------------------------------------------------------------- launch mode


def instance_costs(
    snapshot: Snapshot, calibration: SlabCalibration = UNCALIBRATED
) -> dict[int, tuple[int, int]]:
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
        own = process_cost(process, calibration)
        costs[process.instance] = (
            cost + own.total_bytes + _shared_share(process),
            private + own.own_bytes,
        )
    return costs


def _shared_share(process: ProcessMemory) -> int:
    return max(process.rollup.pss_bytes - process.rollup.uss_bytes, 0)


def launch_members(snapshot: Snapshot) -> list[ProcessMemory]:
    """Launch mode: the processes of every launched instance's tree."""
    return [p for p in snapshot.processes if p.instance is not None]


def launch_total(snapshot: Snapshot, calibration: SlabCalibration = UNCALIBRATED) -> int:
    """Process-side total(N): pages shared inside the workload once, plus every instance."""
    return shared_once(launch_members(snapshot)) + launch_own(snapshot, calibration)


def launch_own(snapshot: Snapshot, calibration: SlabCalibration = UNCALIBRATED) -> int:
    """The instances' own pages and kernel memory, without the pages they share."""
    return sum(process_cost(p, calibration).total_bytes for p in launch_members(snapshot))


def launch_breakdown(snapshot: Snapshot, calibration: SlabCalibration = UNCALIBRATED) -> Breakdown:
    """What one instance costs, by kind (means over the instances of one snapshot); the
    fit's intercept, not this, says what is paid once."""
    trees: dict[int, list[ProcessMemory]] = {}
    for process in launch_members(snapshot):
        assert process.instance is not None
        trees.setdefault(process.instance, []).append(process)

    def mean(value: Callable[[ProcessMemory], float]) -> int:
        sums = [sum(value(p) for p in tree) for tree in trees.values()]
        return round(statistics.fmean(sums)) if sums else 0

    def cost(p: ProcessMemory) -> ProcessCost:
        return process_cost(p, calibration)

    return Breakdown(
        per_instance_uss_bytes=mean(lambda p: cost(p).own_bytes),
        per_instance_shared_bytes=mean(_shared_share),
        per_instance_page_tables_bytes=mean(lambda p: cost(p).page_tables_bytes),
        per_instance_kernel_stack_bytes=mean(lambda p: cost(p).kernel_stack_bytes),
        per_instance_slab_bytes=mean(lambda p: cost(p).calibrated_slab),
        kernel_source=calibration.source,
        fixed_parent_bytes=0,
        fixed_shared_bytes=0,
        fixed_kernel_bytes=0,
    )
