"""The exact page tier on synthetic data: pagemap and kpagecount built with numpy.

The pure functions get small arrays whose answer can be worked out by hand. The readers
get a fake root (``root/proc/PID/{maps,pagemap,stat}``, ``root/proc/kpage*``) written from
the same arrays, so the whole ``measure`` path runs without a kernel, including the
failures a live kernel produces only by chance: a process replaced mid-walk, pagemap
failing with EIO, a short read, frame numbers hidden, a kernel without kpageflags.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from capacity.errors import ExactUnavailable
from capacity.measure import pages, sharing
from capacity.measure.procparse import Mapping
from capacity.records import FallbackCause

PRESENT = 1 << 63
SWAPPED = 1 << 62
FILE = 1 << 61
ANON = 1 << sharing.KPF_ANON
SWAPBACKED = 1 << sharing.KPF_SWAPBACKED
ZERO = 1 << sharing.KPF_ZERO_PAGE
THP = 1 << sharing.KPF_THP
PAGE = 4096


def u64(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64)


# --------------------------------------------------------------------------- decoding


def test_decode_keeps_present_frames_and_counts_swap() -> None:
    entries = u64([PRESENT | 7, 0, SWAPPED | 99, PRESENT | FILE | 8, PRESENT | (1 << 56) | 9])
    decoded = sharing.decode_pagemap(entries)
    assert decoded.frames.tolist() == [7, 8, 9]  # flag bits above 54 are not part of the PFN
    assert decoded.positions.tolist() == [0, 3, 4]
    assert decoded.swapped == 1


def test_hidden_frames_are_present_pages_that_all_read_zero() -> None:
    assert sharing.frames_hidden(u64([0, 0, 0]))
    assert not sharing.frames_hidden(u64([0, 5]))  # a special mapping's frame 0 among real ones
    assert not sharing.frames_hidden(u64([]))  # no present page: nothing was hidden


# --------------------------------------------------------------------------- frames


def test_coalesce_merges_close_frames_and_splits_long_spans() -> None:
    starts, lengths = sharing.coalesce(u64([1, 2, 3, 1000, 1004, 5000]), max_gap=10)
    assert list(zip(starts.tolist(), lengths.tolist(), strict=True)) == [
        (1, 3),
        (1000, 5),
        (5000, 1),
    ]
    starts, lengths = sharing.coalesce(u64([0, 5, 9]), max_gap=10, max_span=4)
    assert list(zip(starts.tolist(), lengths.tolist(), strict=True)) == [(0, 4), (4, 4), (8, 2)]
    starts, lengths = sharing.coalesce(u64([]))
    assert len(starts) == len(lengths) == 0


def test_gather_reads_spans_and_pads_a_short_read_with_zeros() -> None:
    table = np.arange(100, dtype=np.uint64) * np.uint64(10)  # entry i holds 10 * i
    calls = []

    def read(first: int, count: int) -> bytes:
        calls.append((first, count))
        return table[first : first + count].tobytes()  # short past entry 99

    frames = u64([3, 4, 50, 98, 99, 120])
    starts, lengths = sharing.coalesce(frames, max_gap=2)
    got = sharing.gather_spans(frames, starts, lengths, read)
    assert got.tolist() == [30, 40, 500, 980, 990, 0]
    assert len(calls) == 4  # one read per span, never one per frame


# --------------------------------------------------------------------------- sharing

# Parent P, workers W1..W3 in fork order. Frame: who maps it -> expected class.
#   10: P W1 W2 W3, kpagecount 5 (one mapping outside)   -> OUTSIDE
#   11: P W1, kpagecount 2                               -> SHARED_WITH_PARENT
#   12: P W2                                             -> SHARED_WITH_PARENT
#   13: P                                                -> PARENT_ONLY
#   20, 21: W1; 22: W2                                   -> PRIVATE
#   30: W1 W2                                            -> SHARED_WORKERS
#   40: W3 twice (two mappings of one process)           -> PRIVATE
#   50: W2, the zero page                                -> NOT_COUNTED
FRAMES = [
    u64([10, 11, 12, 13]),
    u64([10, 11, 20, 21, 30]),
    u64([10, 12, 22, 30, 50]),
    u64([10, 40, 40]),
]
KPAGECOUNT = {10: 5, 11: 2, 12: 2, 13: 1, 20: 1, 21: 1, 22: 1, 30: 2, 40: 2, 50: 900}
FLAGS = dict.fromkeys(KPAGECOUNT, ANON) | {10: 0, 50: ZERO, 13: SWAPBACKED}


def classified() -> sharing.Classification:
    index = sharing.index_pages(FRAMES, parent_count=1)
    counts = u64([KPAGECOUNT[int(f)] for f in index.frames])
    flags = u64([FLAGS[int(f)] for f in index.frames])
    return sharing.classify(index, counts, flags)


def test_index_counts_mappings_and_distinct_processes() -> None:
    index = sharing.index_pages(FRAMES, parent_count=1)
    assert index.frames.tolist() == [10, 11, 12, 13, 20, 21, 22, 30, 40, 50]
    assert index.inside.tolist() == [4, 2, 2, 1, 1, 1, 1, 2, 2, 1]
    assert index.parents.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert index.workers.tolist() == [3, 1, 1, 0, 1, 1, 1, 2, 1, 1]
    assert index.first_owner.tolist() == [0, 0, 0, 0, 1, 1, 2, 1, 3, 2]
    # frame_of points every occurrence at its frame
    every = np.concatenate(FRAMES)
    assert np.array_equal(index.frames[index.frame_of], every)


def test_classify_by_who_maps_each_frame() -> None:
    cls = classified()
    by_frame = dict(zip(cls.index.frames.tolist(), cls.sharing.tolist(), strict=True))
    assert by_frame == {
        10: sharing.OUTSIDE,
        11: sharing.SHARED_WITH_PARENT,
        12: sharing.SHARED_WITH_PARENT,
        13: sharing.PARENT_ONLY,
        20: sharing.PRIVATE,
        21: sharing.PRIVATE,
        22: sharing.PRIVATE,
        30: sharing.SHARED_WORKERS,
        40: sharing.PRIVATE,
        50: sharing.NOT_COUNTED,
    }


def test_a_count_below_the_workloads_own_mappings_is_not_outside() -> None:
    # The page was unmapped between the pagemap read and the kpagecount read.
    index = sharing.index_pages([u64([1]), u64([1])], parent_count=1)
    cls = sharing.classify(index, u64([1]), u64([ANON]))
    assert cls.sharing.tolist() == [sharing.SHARED_WITH_PARENT]


def test_cumulative_pages_count_each_frame_at_its_first_mapper() -> None:
    # Parent: 11 12 13 (10 is outside). W1 adds 20 21 30. W2 adds 22 (50 is the zero page).
    # W3 adds 40, mapped twice but one frame.
    assert sharing.cumulative_pages(classified()).tolist() == [3, 6, 7, 8]


def test_private_pages_per_worker_leave_out_pages_workers_share() -> None:
    # W1 alone maps 20 and 21 (30 is shared with W2: paid once), W2 alone 22, W3 alone 40.
    assert sharing.private_by_worker(classified()).tolist() == [2, 1, 1]


def test_exact_points_put_pages_workers_share_in_the_base() -> None:
    """A page two workers share without the parent is paid once, not by the first of them."""
    from capacity.model import accounting
    from capacity.records import MemoryRollup, ProcessMemory, Snapshot

    counts = sharing.summarise(classified(), [100, 101, 102, 103], page_size=PAGE)

    def process(pid: int, role: str) -> ProcessMemory:
        return ProcessMemory(
            pid=pid, start_ticks=pid, ppid=1 if role == "parent" else 100, name="w",
            state="S", role=role, threads=1,  # type: ignore[arg-type]
            rollup=MemoryRollup(rss_bytes=0, pss_bytes=0), page_tables_bytes=1000,
        )  # fmt: skip

    snapshot = Snapshot(
        index=0, taken_at=0.0, elapsed_seconds=0.0, read_seconds=0.0,
        processes=(process(100, "parent"), *tuple(process(p, "worker") for p in (101, 102, 103))),
        pages=counts,
    )  # fmt: skip
    [points] = accounting.exact_points([snapshot])
    assert points.increments == (2 * PAGE + 1000, PAGE + 1000, PAGE + 1000)
    # parent's 3 charged pages + the shared page 30 + the parent's page tables
    assert points.base == 4 * PAGE + 1000
    assert points.base + sum(points.increments) == counts.cumulative_bytes[-1] + 4 * 1000


def test_summarise_in_bytes() -> None:
    counts = sharing.summarise(classified(), [100, 101, 102, 103], page_size=PAGE, swapped_pages=2)
    assert counts.cumulative_bytes == (3 * PAGE, 6 * PAGE, 7 * PAGE, 8 * PAGE)
    assert counts.worker_private_bytes == (2 * PAGE, PAGE, PAGE)
    assert counts.distinct_bytes == 9 * PAGE  # every frame but the zero page
    assert counts.charged_bytes == 8 * PAGE
    assert counts.parent_only_bytes == PAGE
    assert counts.shared_with_parent_bytes == 2 * PAGE
    assert counts.shared_workers_bytes == PAGE
    assert counts.private_workers_bytes == 4 * PAGE
    assert counts.shared_outside_bytes == PAGE
    assert counts.shared_outside_pss_bytes == round(4 / 5 * PAGE)  # 4 of its 5 mappings
    assert counts.anon_bytes == 7 * PAGE
    assert counts.shmem_bytes == PAGE  # swap-backed, not anonymous: frame 13
    assert counts.file_bytes == PAGE  # frame 10
    assert counts.swapped_bytes == 2 * PAGE
    assert counts.parent_count == 1
    assert counts.pids == (100, 101, 102, 103)


def test_row_pages_split_paid_once_private_and_outside() -> None:
    cls = classified()
    # Row 0 for every parent occurrence and for frames 10 and 30; row 1 for the rest.
    every = np.concatenate(FRAMES)
    row_of = np.where(np.isin(every, [10, 11, 12, 13, 30]), 0, 1).astype(np.intp)
    rows = sharing.row_pages(cls, row_of, 2)
    assert rows.once.tolist() == [4, 0]  # 11 12 13 30; 10 is outside
    assert rows.outside.tolist() == [1, 0]
    # Row 1 private per worker: W1 has 20 21, W2 has 22, W3 has 40 (once though mapped twice)
    assert rows.private.tolist() == [[0, 0, 0], [2, 1, 1]]
    # RSS sums occurrences (as pmap does) without the zero page (50); 40 counts twice
    assert rows.rss.tolist() == [4 + 3 + 3 + 1, 2 + 1 + 2]


def test_empty_workload_classifies_to_nothing() -> None:
    index = sharing.index_pages([u64([]), u64([])], parent_count=1)
    cls = sharing.classify(index, u64([]), u64([]))
    assert sharing.cumulative_pages(cls).tolist() == [0, 0]


def test_read_plan_merges_neighbouring_mappings_and_skips_prot_none() -> None:
    def m(start: int, end: int, perms: str = "r--p") -> Mapping:
        return Mapping(
            start=start * PAGE, end=end * PAGE, perms=perms, offset=0, dev="", inode=0, path=""
        )

    maps = [m(10, 12), m(12, 20, "---p"), m(20, 22, "rw-p"), m(10**6, 10**6 + 3)]
    firsts, counts, numbers = pages.read_plan(maps, PAGE)
    assert list(zip(firsts.tolist(), counts.tolist(), strict=True)) == [(10, 12), (10**6, 3)]
    assert numbers.tolist() == [0, 2, 3]
    owner = pages.assign_pages(
        np.asarray([10, 11, 15, 21, 10**6 + 2, 10**6 + 3]), maps, numbers, PAGE
    )
    assert owner.tolist() == [0, 0, -1, 2, 3, -1]


# --------------------------------------------------------------------------- readers


def stat_line(pid: int, start_ticks: int, state: str = "S") -> str:
    fields = [state, "1"] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 30
    return f"{pid} (fake) " + " ".join(fields) + "\n"


class FakeHost:
    """A root directory with the /proc files the exact tier reads, built from arrays."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc").mkdir(parents=True)
        self.counts: dict[int, int] = {}
        self.flags: dict[int, int] = {}

    def process(self, pid: int, vmas: list[tuple[int, str, str, list[int]]]) -> None:
        """``vmas``: (first page, perms, path, pagemap entries) per mapping."""
        base = self.root / "proc" / str(pid)
        base.mkdir()
        (base / "stat").write_text(stat_line(pid, 1000 + pid))
        lines = []
        with open(base / "pagemap", "wb") as handle:
            for first, perms, path, entries in vmas:
                start, end = first * PAGE, (first + len(entries)) * PAGE
                lines.append(f"{start:x}-{end:x} {perms} 00000000 00:00 0 {path}".rstrip())
                handle.seek(first * 8)
                handle.write(u64(entries).tobytes())
        (base / "maps").write_text("\n".join(lines) + "\n")

    def frame(self, pfn: int, count: int, flags: int = ANON) -> None:
        self.counts[pfn] = count
        self.flags[pfn] = flags

    def write_kpage(self) -> None:
        size = max(self.counts) + 1
        for name, values in (("kpagecount", self.counts), ("kpageflags", self.flags)):
            table = np.zeros(size, dtype=np.uint64)
            for pfn, value in values.items():
                table[pfn] = value
            (self.root / "proc" / name).write_bytes(table.tobytes())


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    fake = FakeHost(tmp_path)
    # Parent 10: a heap page shared with worker 11 and a libc page shared with the host.
    fake.process(
        10,
        [
            (16, "rw-p", "[heap]", [PRESENT | 100, 0]),
            (32, "r-xp", "/lib/libc.so.6", [PRESENT | 200]),
        ],
    )
    fake.process(
        11,
        [
            (16, "rw-p", "[heap]", [PRESENT | 100, PRESENT | 101]),
            (32, "r-xp", "/lib/libc.so.6", [PRESENT | 200]),
        ],
    )
    fake.process(12, [(16, "rw-p", "[heap]", [PRESENT | 102, SWAPPED | 3])])
    fake.frame(100, 2)
    fake.frame(101, 1)
    fake.frame(102, 1)
    fake.frame(200, 30, flags=0)
    fake.write_kpage()
    return fake


def members(*pids: int) -> list[tuple[int, int | None]]:
    return [(pid, 1000 + pid) for pid in pids]


def test_measure_on_a_fake_root(host: FakeHost) -> None:
    walk = pages.measure(members(10, 11, 12), 1, host.root, page_size=PAGE)
    c = walk.counts
    assert walk.skipped == ()
    assert c.pids == (10, 11, 12)
    assert c.cumulative_bytes == (PAGE, 2 * PAGE, 3 * PAGE)  # libc (frame 200) not charged
    assert c.shared_outside_bytes == PAGE
    assert c.shared_outside_pss_bytes == round(2 / 30 * PAGE)
    assert c.shared_with_parent_bytes == PAGE
    assert c.private_workers_bytes == 2 * PAGE
    assert c.swapped_bytes == PAGE
    heap = walk.processes[1]
    assert [heap.mappings[i].path for i in heap.mapping_of] == [
        "[heap]",
        "[heap]",
        "/lib/libc.so.6",
    ]


def test_a_process_replaced_mid_walk_is_skipped_and_counted(host: FakeHost) -> None:
    (host.root / "proc" / "12" / "stat").write_text(stat_line(12, 5))  # another start time
    walk = pages.measure(members(10, 11, 12), 1, host.root, page_size=PAGE)
    assert walk.skipped == ((12, "replaced"),)
    assert walk.counts.pids == (10, 11)
    assert walk.counts.skipped == 1
    assert walk.counts.cumulative_bytes == (PAGE, 2 * PAGE)


def test_a_process_that_exits_mid_walk_is_skipped(host: FakeHost) -> None:
    (host.root / "proc" / "11" / "stat").write_text(stat_line(11, 1011, state="Z"))
    walk = pages.measure(members(10, 11, 12), 1, host.root, page_size=PAGE)
    assert walk.skipped == ((11, "zombie"),)
    # The kernel still counts worker 11's mapping of frame 100, which is no longer part of
    # the walked workload: the frame is shared outside, never charged twice.
    assert walk.counts.shared_outside_bytes == 2 * PAGE  # frames 100 and 200
    assert walk.counts.cumulative_bytes == (0, PAGE)


def test_a_vanished_process_is_skipped(host: FakeHost) -> None:
    walk = pages.measure(members(10, 11, 99), 1, host.root, page_size=PAGE)
    assert walk.skipped == ((99, "vanished"),)


def test_pagemap_eio_is_retried_once(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pread
    failures = {"left": 1}

    def flaky(fd: int, size: int, offset: int) -> bytes:
        if failures["left"] and os.readlink(f"/proc/self/fd/{fd}").endswith("11/pagemap"):
            failures["left"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, size, offset)

    monkeypatch.setattr(pages.os, "pread", flaky)
    walk = pages.measure(members(10, 11, 12), 1, host.root, page_size=PAGE)
    assert walk.skipped == ()
    assert walk.counts.cumulative_bytes == (PAGE, 2 * PAGE, 3 * PAGE)


def test_pagemap_failing_twice_skips_the_process(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pread

    def broken(fd: int, size: int, offset: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("12/pagemap"):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, size, offset)

    monkeypatch.setattr(pages.os, "pread", broken)
    walk = pages.measure(members(10, 11, 12), 1, host.root, page_size=PAGE)
    assert walk.skipped == ((12, "changed"),)
    assert walk.counts.pids == (10, 11)


def test_a_short_pagemap_reads_the_rest_as_absent(host: FakeHost) -> None:
    # maps says the heap has 4 pages; pagemap ends after 2 (a mapping that shrank).
    base = host.root / "proc" / "11"
    maps = (base / "maps").read_text().replace(f"-{18 * PAGE:x} rw-p", f"-{20 * PAGE:x} rw-p")
    (base / "maps").write_text(maps)
    with open(base / "pagemap", "r+b") as handle:
        handle.truncate(18 * 8)
    walk = pages.measure(members(10, 11), 1, host.root, page_size=PAGE)
    assert walk.skipped == ()
    assert walk.counts.cumulative_bytes == (PAGE, 2 * PAGE)  # libc page of 11 is gone too


def test_hidden_frame_numbers_are_detected(tmp_path: Path) -> None:
    fake = FakeHost(tmp_path)
    fake.process(10, [(16, "rw-p", "[heap]", [PRESENT, PRESENT, PRESENT])])  # PFN 0 each
    fake.frame(1, 1)
    fake.write_kpage()
    with pytest.raises(ExactUnavailable, match="frame number as 0"):
        pages.measure(members(10), 1, tmp_path, page_size=PAGE)


def test_a_kernel_without_kpageflags(host: FakeHost) -> None:
    (host.root / "proc" / "kpageflags").unlink()
    fallback = pages.exact_unavailable(host.root)
    assert fallback is not None and "kpageflags" in fallback.reason
    assert fallback.cause == FallbackCause.NO_KPAGEFLAGS
    with pytest.raises(ExactUnavailable, match="CONFIG_PROC_PAGE_MONITOR"):
        pages.measure(members(10, 11), 1, host.root, page_size=PAGE)


def test_exact_is_available_when_both_files_open(host: FakeHost) -> None:
    assert pages.exact_unavailable(host.root) is None


# --------------------------------------------------------------------------- groups (issue 13)


def test_walk_groups_keeps_a_shared_master_s_pages_in_each_pool(tmp_path: Path) -> None:
    """A php-fpm master (10) with two pools (worker 11 in A, 21 in B) whose children both
    map the master's heap page 100: for each pool the other pool is beside it, so page 100
    is the master's (the pool's fixed cost), not "outside"; the other pool's own page is
    none of its pages."""
    from capacity.records import MemoryRollup, ProcessMemory

    fake = FakeHost(tmp_path)
    fake.process(10, [(16, "rw-p", "[heap]", [PRESENT | 100])])
    fake.process(11, [(16, "rw-p", "[heap]", [PRESENT | 100, PRESENT | 101])])
    fake.process(21, [(16, "rw-p", "[heap]", [PRESENT | 100, PRESENT | 102])])
    fake.frame(100, 3)
    fake.frame(101, 1)
    fake.frame(102, 1)
    fake.write_kpage()

    def member(pid: int, role: str) -> ProcessMemory:
        return ProcessMemory(
            pid=pid, start_ticks=1000 + pid, ppid=10, name="php-fpm", state="S",
            role="parent" if role == "parent" else "worker", threads=1,
            rollup=MemoryRollup(rss_bytes=0, pss_bytes=0),
        )  # fmt: skip

    master, a, b = member(10, "parent"), member(11, "worker"), member(21, "worker")
    (one, two), lost = pages.walk_groups([[master, a], [master, b]], [[b], [a]], fake.root)
    assert lost == ()
    for walk, pid in ((one, 11), (two, 21)):
        assert walk.walk is not None
        counts = walk.walk.counts
        assert counts.pids == (10, pid)
        assert counts.cumulative_bytes == (PAGE, 2 * PAGE)  # page 100 with the master
        assert counts.shared_outside_bytes == 0
        assert counts.distinct_bytes == 2 * PAGE  # the other pool's page is not counted
    # Alone, each pool sees page 100 shared with a process outside it: not charged.
    (alone,), _ = pages.walk_groups([[master, a]], [[]], fake.root)
    assert alone.walk is not None
    assert alone.walk.counts.cumulative_bytes == (0, PAGE)
    assert alone.walk.counts.shared_outside_bytes == PAGE
