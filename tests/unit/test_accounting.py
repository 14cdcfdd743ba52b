"""What is paid once, what each worker adds, and what the kernel would reclaim first.

Constructed records with known figures: the arithmetic, not the host, is under test here
(tests/test_servers.py and tests/test_validation.py check the same rules on real servers).
"""

from __future__ import annotations

import dataclasses

import pytest

from capacity.model import accounting
from capacity.model.fitting import fit, predict
from capacity.records import (
    Budget,
    CgroupMemory,
    MemoryRollup,
    ProcessMemory,
    SlabCalibration,
    Snapshot,
)

KiB, MiB = 1024, 1024 * 1024


def process(
    pid: int,
    role: str,
    *,
    private_dirty: int,
    private_clean: int = 0,
    pss_anon: int = 0,
    pss_file: int = 0,
    slab: int = 40 * KiB,
) -> ProcessMemory:
    rollup = MemoryRollup(
        rss_bytes=private_dirty + private_clean + 4 * MiB,
        pss_bytes=pss_anon + pss_file,
        pss_anon_bytes=pss_anon,
        pss_file_bytes=pss_file,
        private_dirty_bytes=private_dirty,
        private_clean_bytes=private_clean,
    )
    return ProcessMemory(
        pid=pid,
        start_ticks=pid,
        ppid=1 if role == "parent" else 100,
        name="server",
        state="S",
        role="parent" if role == "parent" else "worker",
        threads=1,
        rollup=rollup,
        page_tables_bytes=50 * KiB,
        kernel_stack_bytes=16 * KiB,
        slab_bytes=slab,
    )


def snapshot(kernel: int | None = None, workers: int = 4, index: int = 0) -> Snapshot:
    # Parent: 1 MiB anon of its own, 3 MiB of file pages only it maps (a binary's pages it
    # alone touched), and shares of 2 MiB anon and 4 MiB file pages with its workers.
    parent = process(
        100,
        "parent",
        private_dirty=1 * MiB,
        private_clean=3 * MiB,
        pss_anon=1 * MiB + 2 * MiB // (workers + 1),
        pss_file=3 * MiB + 4 * MiB // (workers + 1),
    )
    children = [
        process(
            101 + i,
            "worker",
            private_dirty=2 * MiB,
            pss_anon=2 * MiB + 2 * MiB // (workers + 1),
            pss_file=4 * MiB // (workers + 1),
        )
        for i in range(workers)
    ]
    cgroup = None
    if kernel is not None:
        cgroup = CgroupMemory(
            path="/capplan-test", version=1, current_bytes=0, stat={"kernel": kernel}, own=True
        )
    return Snapshot(
        index=index,
        taken_at=0.0,
        elapsed_seconds=0.0,
        read_seconds=0.0,
        processes=(parent, *children),
        cgroup=cgroup,
    )


def test_file_pages_are_paid_once_but_kept_out_of_fixed() -> None:
    snap = snapshot()
    # All the workload's file pages once: the parent's own 3 MiB plus the shared 4 MiB.
    assert accounting.file_cache_once(snap) == pytest.approx(7 * MiB, abs=KiB)
    (points,) = accounting.smaps_points([snap])
    parent_kernel = 50 * KiB + 16 * KiB + 40 * KiB
    # Fixed: the parent's anon (1 MiB), the shared anon once (2 MiB), the parent's kernel.
    assert points.base == pytest.approx(3 * MiB + parent_kernel, abs=KiB)
    assert points.increments == (2 * MiB + parent_kernel,) * 4
    breakdown = accounting.smaps_breakdown([snap], SlabCalibration.UNCALIBRATED)
    assert breakdown.fixed_parent_bytes == 1 * MiB
    assert breakdown.fixed_shared_bytes == pytest.approx(2 * MiB, abs=KiB)
    assert breakdown.fixed_file_bytes == pytest.approx(7 * MiB, abs=KiB)
    assert (
        accounting.reclaimable_once([snap], SlabCalibration.UNCALIBRATED)
        == breakdown.fixed_file_bytes
    )


def test_a_workers_private_file_pages_stay_in_its_own_cost() -> None:
    snap = snapshot()
    worker = snap.workers[0]
    rollup = dataclasses.replace(
        worker.rollup,
        private_clean_bytes=512 * KiB,
        pss_file_bytes=worker.rollup.pss_file_bytes + 512 * KiB,
    )
    changed = dataclasses.replace(
        snap,
        processes=(
            *snap.parents,
            dataclasses.replace(worker, rollup=rollup),
            *snap.workers[1:],
        ),
    )
    # In the worker's USS (what it adds), not a second time in the page cache paid once.
    assert accounting.file_cache_once(changed) == accounting.file_cache_once(snap)
    assert (
        accounting.process_cost(changed.workers[0]).total_bytes
        == accounting.process_cost(snap.workers[0]).total_bytes + 512 * KiB
    )


def test_cgroup_lowers_a_too_high_slab_estimate() -> None:
    estimated = 5 * 40 * KiB
    tables_and_stacks = 5 * (50 + 16) * KiB
    snap = snapshot(kernel=tables_and_stacks + estimated // 2)
    assert accounting.slab_calibration([snap]).factor == pytest.approx(0.5)
    assert accounting.unexplained_kernel(snap, SlabCalibration(factor=0.5, source="cgroup")) == 0


def test_cgroup_never_raises_the_slab_estimate() -> None:
    """Kernel memory the processes do not explain is paid once, not smeared over workers."""
    estimated = 5 * 40 * KiB
    tables_and_stacks = 5 * (50 + 16) * KiB
    excess = 3 * MiB  # dentries, inodes, sockets: none of it belongs to one worker
    snap = snapshot(kernel=tables_and_stacks + estimated + excess)
    calibration = accounting.slab_calibration([snap])
    factor = calibration.factor
    assert factor == 1.0
    assert accounting.unexplained_kernel(snap, calibration) == excess
    (points,) = accounting.smaps_points([snap], calibration)
    assert points.increments == (2 * MiB + (50 + 16 + 40) * KiB,) * 4
    breakdown = accounting.smaps_breakdown([snap], calibration)
    assert breakdown.kernel_source == "cgroup"
    assert breakdown.fixed_unexplained_kernel_bytes == excess
    assert accounting.reclaimable_once([snap], calibration) == breakdown.fixed_file_bytes + excess


def test_conservative_prediction_keeps_the_reclaimable_part() -> None:
    snaps = [snapshot(index=i) for i in range(3)]
    points = accounting.smaps_points(snaps)
    model = fit(points, "smaps")
    budget = Budget(
        total_bytes=256 * MiB,
        reserve_bytes=0,
        available_bytes=256 * MiB,
        source="test",
        reserve_source="test",
    )
    plain = predict(model, budget)
    reclaimable = accounting.reclaimable_once(snaps, SlabCalibration.UNCALIBRATED)
    kept = predict(dataclasses.replace(model, reclaimable_bytes=reclaimable), budget)
    assert kept.max_instances == plain.max_instances  # the point answer does not keep it
    per_worker = model.per_instance_bytes
    assert kept.max_instances_conservative <= plain.max_instances_conservative - (
        reclaimable // per_worker
    )


MAPS = b"""\
5603357a4000-5603357c9000 r--p 00000000 fe:01 1234 /usr/sbin/apache2
5603357c9000-560335850000 r-xp 00025000 fe:01 1234 /usr/sbin/apache2
560335850000-56033585c000 rw-p 000ac000 fe:01 1234 /usr/sbin/apache2
56036e2db000-56036e2fc000 rw-p 00000000 00:00 0 [heap]
7f164e15c000-7f164e35c000 rw-p 00000000 00:00 0
7f164e400000-7f164e7da000 r-xp 00000000 fe:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffcbe714000-7ffcbe735000 rw-p 00000000 00:00 0 [stack]
7ffcbe7f0000-7ffcbe7f4000 r--p 00000000 00:00 0 [vvar]
7ffcbe7f4000-7ffcbe7f6000 r-xp 00000000 00:00 0 [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
"""


def test_address_regions_are_runs_of_mappings_within_a_page_table_span() -> None:
    from capacity.measure.kernel import page_table_span
    from capacity.measure.procparse import count_address_regions

    span = page_table_span(4096)
    assert span == 2 * MiB
    # The binary, the heap (far from it), the mmap area (its two mappings are 660 KiB
    # apart: one region), the stack with vvar and vdso; the vsyscall gate is no VMA.
    assert count_address_regions(MAPS, span) == 4
    assert count_address_regions(b"", span) == 0
    assert count_address_regions(b"garbage\n", span) == 0


def test_conservative_prediction_allows_for_another_address_layout() -> None:
    snaps = [
        dataclasses.replace(
            snap,
            processes=tuple(dataclasses.replace(p, address_regions=4) for p in snap.processes),
        )
        for snap in (snapshot(index=i) for i in range(3))
    ]
    allowance = accounting.layout_allowance(snaps, 4096)
    assert allowance == 4 * 4096
    model = fit(accounting.smaps_points(snaps), "smaps")
    budget = Budget(
        total_bytes=512 * MiB,
        reserve_bytes=0,
        available_bytes=512 * MiB,
        source="test",
        reserve_source="test",
    )
    plain = predict(model, budget)
    allowed = predict(dataclasses.replace(model, layout_allowance_bytes=allowance), budget)
    assert allowed.max_instances == plain.max_instances
    n = allowed.max_instances_conservative
    assert n < plain.max_instances_conservative
    # It fits with every worker's allowance added, and one more would not.
    extra = dataclasses.replace(model, layout_allowance_bytes=allowance)
    from capacity.model.fitting import upper_bound

    assert upper_bound(extra, n) <= budget.available_bytes < upper_bound(extra, n + 1)
    assert upper_bound(extra, n) == pytest.approx(upper_bound(model, n) + n * allowance)
