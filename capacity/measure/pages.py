"""Exact page accounting: every physical page of the workload counted once.

smaps_rollup sums pages per process; it cannot say which physical pages two workers share
with each other, with their parent or with the rest of the host. The kernel can:

* ``/proc/PID/pagemap`` holds one 64-bit entry per virtual page: bit 63 present, bit 62
  swapped, bit 61 file page or shared anonymous, bit 56 exclusively mapped (since Linux
  4.2), bits 0-54 the page frame number (PFN). Since Linux 4.0 the PFN needs
  CAP_SYS_ADMIN; from 4.2 on, a reader without it gets the entries with the PFN silently
  zeroed (4.0 and 4.1 refused the open with EPERM). A present page with PFN 0 therefore
  means "hidden", never a real frame: x86's frame 0 is reserved and never maps user memory.
* ``/proc/kpagecount`` holds, per PFN, how many times the frame is mapped (all processes of
  the host); ``/proc/kpageflags`` its flags (``KPF_*`` below). Both are root-only (mode
  0400) and exist only with CONFIG_PROC_PAGE_MONITOR.

A frame mapped ``inside`` times by the workload's own page tables and ``kpagecount`` times
in all is shared with processes outside the workload when ``kpagecount > inside``: libc
pages mapped by sshd, the page cache of a file another program also maps. Those pages
would be in memory anyway, so capplan reports them apart and does not charge them.

Two halves, as in ``procfs``:

* pure functions over numpy arrays (``decode_pagemap``, ``coalesce``, ``gather_spans``,
  ``index_pages``, ``classify``, ``cumulative_pages``, ``summarise``, ``row_pages``): the
  tests feed them small synthetic pagemap and kpagecount arrays built with numpy;
* readers under a ``root`` (``read_process_pages``, ``read_frames``, ``measure``).

Cost: one ``pread`` per mapping (in 4 MiB chunks) for pagemap, one per contiguous span of
frames for kpagecount and kpageflags (spans closer than ``MAX_GAP`` frames are merged:
reading a few unused entries is cheaper than another system call). No Python loop runs
per page. ``benchmarks/exact_pages.py`` times it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from capacity.errors import ExactUnavailable, NoSuchProcess, ReplacedProcess, ZombieProcess
from capacity.measure.procfs import DEFAULT_ROOT, proc_dir, read_maps, read_stat
from capacity.measure.procparse import Mapping
from capacity.records import ExactFallback, FallbackCause, PageCounts, ProcessMemory, Skipped

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
IntP = npt.NDArray[np.intp]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
ENTRY = 8  # bytes per pagemap / kpagecount / kpageflags entry

# pagemap bits (Documentation/admin-guide/mm/pagemap.rst, fs/proc/task_mmu.c)
PM_PFN_MASK = np.uint64((1 << 55) - 1)
PM_EXCLUSIVE = np.uint64(1 << 56)  # since Linux 4.2
PM_FILE = np.uint64(1 << 61)
PM_SWAP = np.uint64(1 << 62)
PM_PRESENT = np.uint64(1 << 63)

# kpageflags bits (include/uapi/linux/kernel-page-flags.h)
KPF_DIRTY = 4
KPF_MMAP = 11
KPF_ANON = 12
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17  # hugetlbfs
KPF_KSM = 21
KPF_THP = 22
KPF_ZERO_PAGE = 24  # the shared zero page (and the huge zero page): nobody's memory

# Page classes, one per distinct frame.
PARENT_ONLY = 0  # mapped by the parent(s) and no worker
SHARED_WITH_PARENT = 1  # mapped by a parent and at least one worker
SHARED_WORKERS = 2  # mapped by two or more workers, not by a parent
PRIVATE = 3  # mapped by exactly one worker
OUTSIDE = 4  # also mapped by processes outside the workload: not charged
NOT_COUNTED = 5  # the zero page: present in page tables, but nobody's memory
CLASS_NAMES = (
    "parent only",
    "shared with the parent",
    "shared among workers only",
    "private to one worker",
    "shared with processes outside the workload",
    "zero page",
)

CHUNK_PAGES = 1 << 19  # pagemap entries per pread: 4 MiB
MERGE_GAP = 4096  # read neighbouring mappings together across holes up to 16 MiB (32 KiB)
MAX_GAP = 512  # merge frame spans closer than this (4 KiB of kpagecount per gap)
MAX_SPAN = 1 << 20  # frames per kpagecount pread: 8 MiB


def _flag(flags: U64, bit: int) -> npt.NDArray[np.bool_]:
    return np.asarray((flags & np.uint64(1 << bit)) != 0, dtype=bool)


# --------------------------------------------------------------------------- pure: pagemap


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    """The present pages of a run of pagemap entries."""

    frames: U64  # PFN of every present page, in address order (0 where hidden)
    positions: IntP  # index of each present page within the entries given
    swapped: int  # entries that are in swap: not in RAM, not counted


def decode_pagemap(entries: U64) -> Decoded:
    """Split raw pagemap entries into the present pages' frames and a swap count."""
    present = (entries & PM_PRESENT) != 0
    positions = np.flatnonzero(present)
    return Decoded(
        frames=entries[positions] & PM_PFN_MASK,
        positions=positions,
        swapped=int(np.count_nonzero(entries & PM_SWAP)),
    )


def frames_hidden(frames: U64) -> bool:
    """True when pages are present but every frame number reads 0: the kernel hid them.

    Linux 4.2+ zeroes the PFN for readers without CAP_SYS_ADMIN and says nothing; summing
    those "frames" would count the whole workload as one page.
    """
    return len(frames) > 0 and not np.any(frames)


# --------------------------------------------------------------------------- pure: frames


def coalesce(frames: U64, max_gap: int = MAX_GAP, max_span: int = MAX_SPAN) -> tuple[U64, U64]:
    """Contiguous spans ``(starts, lengths)`` covering sorted distinct ``frames``.

    Frames closer than ``max_gap`` share a span; no span is longer than ``max_span``
    (one pread each).
    """
    if len(frames) == 0:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    gaps = np.diff(frames)
    breaks = np.flatnonzero(gaps > np.uint64(max_gap))
    first = np.r_[0, breaks + 1]
    last = np.r_[breaks, len(frames) - 1]
    starts = frames[first]
    ends = frames[last] + np.uint64(1)
    lengths = ends - starts
    if np.any(lengths > np.uint64(max_span)):
        # Cut long spans into pieces of max_span; a piece that holds no frame is kept
        # (rare, and harmless: it is read and ignored).
        pieces = ((lengths + np.uint64(max_span - 1)) // np.uint64(max_span)).astype(np.int64)
        span_of = np.repeat(np.arange(len(starts)), pieces)
        piece_no = np.arange(len(span_of)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        new_starts = starts[span_of] + piece_no.astype(np.uint64) * np.uint64(max_span)
        new_ends = np.minimum(new_starts + np.uint64(max_span), ends[span_of])
        starts, lengths = new_starts, new_ends - new_starts
    return starts.astype(np.uint64), lengths.astype(np.uint64)


def gather_spans(frames: U64, starts: U64, lengths: U64, read: Callable[[int, int], bytes]) -> U64:
    """The 64-bit entry of every frame, read span by span with ``read(first, count)``.

    ``read`` returns the raw bytes of ``count`` entries starting at entry ``first``; a
    short answer (past the end of the file) reads as 0 for the missing entries.
    """
    total = int(lengths.sum()) if len(lengths) else 0
    buffer = np.zeros(total, dtype=np.uint64)
    offsets = np.r_[0, np.cumsum(lengths.astype(np.int64))[:-1]] if len(lengths) else []
    for offset, start, length in zip(offsets, starts.tolist(), lengths.tolist(), strict=True):
        data = read(int(start), int(length))
        got = np.frombuffer(data[: len(data) - len(data) % ENTRY], dtype=np.uint64)
        buffer[int(offset) : int(offset) + len(got)] = got[:length]
    if len(frames) == 0:
        return np.empty(0, np.uint64)
    span = np.searchsorted(starts, frames, side="right") - 1
    where = np.asarray(offsets, dtype=np.int64)[span] + (frames - starts[span]).astype(np.int64)
    return buffer[where]


# --------------------------------------------------------------------------- pure: sharing


@dataclasses.dataclass(frozen=True, slots=True)
class PageIndex:
    """Who maps which frame, for processes given as parents first, then workers.

    Per occurrence (every present page of every process, concatenated in process order):
    ``owner`` and ``frame_of`` (index into ``frames``). Per distinct frame: ``inside``
    (mappings by the workload), ``first_owner`` (the earliest process in the order that
    maps it), ``parents`` and ``workers`` (how many distinct ones map it).
    """

    frames: U64
    owner: npt.NDArray[np.int32]
    frame_of: IntP
    inside: I64
    first_owner: npt.NDArray[np.int32]
    parents: I64
    workers: I64
    process_count: int
    parent_count: int


def index_pages(frame_arrays: Sequence[U64], parent_count: int) -> PageIndex:
    """Build the index with one stable sort over every occurrence."""
    sizes = np.fromiter((len(a) for a in frame_arrays), dtype=np.int64, count=len(frame_arrays))
    owner = np.repeat(np.arange(len(frame_arrays), dtype=np.int32), sizes)
    every = np.concatenate(list(frame_arrays)) if frame_arrays else np.empty(0, np.uint64)
    every = every.astype(np.uint64, copy=False)
    order = np.argsort(every, kind="stable")
    ordered = every[order]
    owners = owner[order]
    if len(ordered):
        new_frame = np.r_[True, ordered[1:] != ordered[:-1]]
    else:
        new_frame = np.empty(0, dtype=bool)
    starts = np.flatnonzero(new_frame)
    frames = ordered[starts]
    inside = np.diff(np.r_[starts, len(ordered)]).astype(np.int64)
    # The sort is stable and occurrences were concatenated in process order, so within a
    # frame the owners ascend: the first is the earliest, and a change marks a new process.
    if len(ordered):
        new_owner = new_frame | np.r_[True, owners[1:] != owners[:-1]]
        is_parent = owners < parent_count
        parents = np.add.reduceat((new_owner & is_parent).astype(np.int64), starts)
        processes = np.add.reduceat(new_owner.astype(np.int64), starts)
        first_owner = owners[starts]
    else:
        parents = processes = np.empty(0, np.int64)
        first_owner = np.empty(0, np.int32)
    frame_of = np.empty(len(every), dtype=np.intp)
    frame_of[order] = np.repeat(np.arange(len(frames), dtype=np.intp), inside)
    return PageIndex(
        frames=frames,
        owner=owner,
        frame_of=frame_of,
        inside=inside,
        first_owner=first_owner.astype(np.int32),
        parents=parents,
        workers=processes - parents,
        process_count=len(frame_arrays),
        parent_count=parent_count,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Classification:
    """Every distinct frame of the workload with its host-wide count, flags and class."""

    index: PageIndex
    kpagecount: I64
    flags: U64
    sharing: npt.NDArray[np.int8]

    @property
    def charged(self) -> npt.NDArray[np.bool_]:
        """Frames the workload pays for: not shared outside, not the zero page."""
        return self.sharing < OUTSIDE


def classify(index: PageIndex, kpagecount: U64 | I64, flags: U64) -> Classification:
    """One class per frame (see ``CLASS_NAMES``), from who maps it and how often.

    A frame whose host-wide count is below the workload's own (it was unmapped or reused
    between the pagemap read and the kpagecount read) counts as the workload's: the
    race cannot move a page outside.
    """
    counts = np.asarray(kpagecount).astype(np.int64)
    sharing = np.full(len(index.frames), PRIVATE, dtype=np.int8)
    sharing[index.workers >= 2] = SHARED_WORKERS
    with_parent = index.parents > 0
    sharing[with_parent & (index.workers > 0)] = SHARED_WITH_PARENT
    sharing[with_parent & (index.workers == 0)] = PARENT_ONLY
    sharing[counts > index.inside] = OUTSIDE
    sharing[_flag(flags, KPF_ZERO_PAGE)] = NOT_COUNTED
    return Classification(index=index, kpagecount=counts, flags=flags, sharing=sharing)


def cumulative_pages(cls: Classification) -> I64:
    """Distinct charged pages of the parents plus the first k workers, for k = 0..n.

    A frame counts from the first process (in the given order) that maps it, so
    ``total(k) - total(k-1)`` is exactly what worker k added to the workload.
    """
    index = cls.index
    added = np.bincount(
        index.first_owner[cls.charged], minlength=max(index.process_count, 1)
    ).astype(np.int64)
    base = int(added[: index.parent_count].sum())
    workers = added[index.parent_count : index.process_count]
    return np.asarray(np.r_[base, base + np.cumsum(workers)], dtype=np.int64)


def private_by_worker(cls: Classification) -> I64:
    """Pages private to each worker (mapped by it alone), in walk order."""
    index = cls.index
    mine = cls.sharing == PRIVATE
    owners = np.bincount(index.first_owner[mine], minlength=max(index.process_count, 1))
    return np.asarray(owners[index.parent_count : index.process_count], dtype=np.int64)


def summarise(
    cls: Classification,
    pids: Sequence[int],
    *,
    page_size: int = PAGE_SIZE,
    swapped_pages: int = 0,
    read_seconds: float = 0.0,
    skipped: int = 0,
) -> PageCounts:
    """The record that crosses layers: sizes in bytes, per class and per kind of page."""
    index = cls.index
    counted = cls.sharing != NOT_COUNTED
    by_class = np.bincount(cls.sharing, minlength=len(CLASS_NAMES))
    outside = cls.sharing == OUTSIDE
    # The workload's proportional share (PSS) of the frames it shares with other processes.
    outside_pss = float(np.sum(index.inside[outside] / cls.kpagecount[outside]))
    anon = _flag(cls.flags, KPF_ANON)
    shmem = ~anon & _flag(cls.flags, KPF_SWAPBACKED)

    def pages(mask: npt.NDArray[np.bool_]) -> int:
        return int(np.count_nonzero(mask & counted)) * page_size

    file = ~anon & ~shmem
    once = (
        (cls.sharing == PARENT_ONLY)
        | (cls.sharing == SHARED_WITH_PARENT)
        | (cls.sharing == SHARED_WORKERS)
    )

    return PageCounts(
        page_size=page_size,
        pids=tuple(int(p) for p in pids),
        parent_count=index.parent_count,
        cumulative_bytes=tuple(int(v) * page_size for v in cumulative_pages(cls)),
        worker_private_bytes=tuple(int(v) * page_size for v in private_by_worker(cls)),
        distinct_bytes=int(np.count_nonzero(counted)) * page_size,
        parent_only_bytes=int(by_class[PARENT_ONLY]) * page_size,
        shared_with_parent_bytes=int(by_class[SHARED_WITH_PARENT]) * page_size,
        shared_workers_bytes=int(by_class[SHARED_WORKERS]) * page_size,
        private_workers_bytes=int(by_class[PRIVATE]) * page_size,
        shared_outside_bytes=int(by_class[OUTSIDE]) * page_size,
        shared_outside_pss_bytes=round(outside_pss * page_size),
        anon_bytes=pages(anon),
        file_bytes=pages(file),
        file_once_bytes=pages(file & once),
        file_parent_only_bytes=pages(file & (cls.sharing == PARENT_ONLY)),
        shmem_bytes=pages(shmem),
        thp_bytes=pages(_flag(cls.flags, KPF_THP)),
        ksm_bytes=pages(_flag(cls.flags, KPF_KSM)),
        hugetlb_bytes=pages(_flag(cls.flags, KPF_HUGE)),
        swapped_bytes=swapped_pages * page_size,
        read_seconds=round(read_seconds, 6),
        skipped=skipped,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RowPages:
    """Per row (a mapping kind or file), in pages: what ``capplan inspect`` prints.

    ``private`` is rows x workers: the pages of the row that only that worker maps.
    """

    rss: I64  # present pages summed over processes, as pmap -X sums them
    once: I64  # distinct charged frames not private to one worker: paid once
    outside: I64  # distinct frames shared with processes outside the workload
    private: npt.NDArray[np.int64]
    anon: I64  # distinct counted frames that are anonymous


def row_pages(cls: Classification, row_of: IntP, rows: int) -> RowPages:
    """Aggregate the classification per row; ``row_of`` gives each occurrence's row."""
    index = cls.index
    frames = len(index.frames)
    # The zero page is in page tables but is nobody's memory; smaps leaves it out of Rss too.
    mapped = cls.sharing[index.frame_of] != NOT_COUNTED
    rss = np.bincount(row_of[mapped], minlength=rows).astype(np.int64)
    # Distinct (row, frame) pairs: a frame twice in one row counts once there.
    pair = np.unique(row_of.astype(np.int64) * max(frames, 1) + index.frame_of)
    pair_row = pair // max(frames, 1)
    pair_frame = pair % max(frames, 1)
    sharing = cls.sharing[pair_frame]
    once_mask = sharing < PRIVATE
    once = np.bincount(pair_row[once_mask], minlength=rows).astype(np.int64)
    outside = np.bincount(pair_row[sharing == OUTSIDE], minlength=rows).astype(np.int64)
    anon_mask = _flag(cls.flags[pair_frame], KPF_ANON) & (sharing != NOT_COUNTED)
    anon = np.bincount(pair_row[anon_mask], minlength=rows).astype(np.int64)
    workers = index.process_count - index.parent_count
    private = np.zeros((rows, max(workers, 0)), dtype=np.int64)
    mine = sharing == PRIVATE
    if workers > 0 and np.any(mine):
        worker = index.first_owner[pair_frame[mine]].astype(np.int64) - index.parent_count
        flat = np.bincount(pair_row[mine] * workers + worker, minlength=rows * workers)
        private = flat.reshape(rows, workers).astype(np.int64)
    return RowPages(rss=rss, once=once, outside=outside, private=private, anon=anon)


# --------------------------------------------------------------------------- readers


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessPages:
    """One process's present pages: frame and mapping of each, in address order."""

    pid: int
    mappings: tuple[Mapping, ...]
    frames: U64
    mapping_of: npt.NDArray[np.int32]
    swapped: int


def _is_readable(mapping: Mapping) -> bool:
    # PROT_NONE mappings (guard pages, address-space reservations of Go, the JVM and
    # allocators, often gigabytes wide) are skipped: reading their pagemap costs 8 bytes
    # per virtual page and they hold no pages unless mprotect()ed after being touched.
    return mapping.perms[:3] != "---"


def _read_entries(fd: int, first: int, count: int) -> tuple[U64, bool]:
    """``count`` pagemap entries from entry ``first``; True when the read came up short.

    A short read happens past the end of the user address space ([vsyscall]) and when the
    process's memory is gone (it exited: the kernel then returns 0 bytes).
    """
    parts: list[U64] = []
    done = 0
    short = False
    while done < count:
        want = min(count - done, CHUNK_PAGES)
        data = os.pread(fd, want * ENTRY, (first + done) * ENTRY)
        got = len(data) // ENTRY
        if got:
            parts.append(np.frombuffer(data[: got * ENTRY], dtype=np.uint64))
        if got < want:
            short = True
            break
        done += got
    if not parts:
        return np.empty(0, np.uint64), short
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), short


@contextlib.contextmanager
def _pagemap(pid: int, root: Path) -> Iterator[int]:
    path = proc_dir(pid, root) / "pagemap"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if not (proc_dir(pid, root) / "stat").exists():
            raise NoSuchProcess(pid) from None
        raise ExactUnavailable.because(
            FallbackCause.NO_KPAGEFLAGS, f"{path} does not exist (a kernel without pagemap)"
        ) from None
    except ProcessLookupError:
        raise NoSuchProcess(pid) from None
    except PermissionError:
        # Linux 4.0 and 4.1 refuse the open without CAP_SYS_ADMIN; later kernels zero the
        # frame numbers instead (detected by frames_hidden).
        raise ExactUnavailable.because(
            FallbackCause.PERMISSION,
            f"permission denied opening {path} (CAP_SYS_ADMIN is needed for frame numbers)",
        ) from None
    try:
        yield fd
    finally:
        os.close(fd)


class MappingChanged(Exception):
    """pagemap failed for a mapping twice in a row: the process is remapping under us."""


def read_plan(mappings: Sequence[Mapping], page_size: int = PAGE_SIZE) -> tuple[I64, I64, I64]:
    """Which pagemap ranges to read: ``(first_page, page_count, mapping_number)`` arrays.

    Mappings closer than ``MERGE_GAP`` pages share one read (a library's four segments,
    a heap and its neighbours): pagemap answers holes with zero entries, and one larger
    read costs less than several system calls. ``mapping_number`` is the index in
    ``mappings`` of every mapping read, in order; ``read_plan`` returns the reads as
    ``(first, count)`` through the first two arrays, one entry per read.
    """
    wanted = [
        (m.start // page_size, m.end // page_size, i)
        for i, m in enumerate(mappings)
        if _is_readable(m) and m.end > m.start
    ]
    firsts: list[int] = []
    counts: list[int] = []
    for first, end, _ in wanted:
        if firsts and first - (firsts[-1] + counts[-1]) <= MERGE_GAP and first >= firsts[-1]:
            counts[-1] = max(counts[-1], end - firsts[-1])
        else:
            firsts.append(first)
            counts.append(end - first)
    return (
        np.asarray(firsts, dtype=np.int64),
        np.asarray(counts, dtype=np.int64),
        np.asarray([i for _, _, i in wanted], dtype=np.int64),
    )


def assign_pages(
    page_numbers: I64, mappings: Sequence[Mapping], numbers: I64, page_size: int = PAGE_SIZE
) -> npt.NDArray[np.int32]:
    """The mapping (index into ``mappings``) of each virtual page, or -1 outside those read."""
    if len(numbers) == 0:
        return np.full(len(page_numbers), -1, dtype=np.int32)
    starts = np.asarray([mappings[i].start // page_size for i in numbers], dtype=np.int64)
    ends = np.asarray([mappings[i].end // page_size for i in numbers], dtype=np.int64)
    slot = np.searchsorted(starts, page_numbers, side="right") - 1
    inside = (slot >= 0) & (page_numbers < ends[np.maximum(slot, 0)])
    return np.where(inside, numbers[np.maximum(slot, 0)], -1).astype(np.int32)


def read_process_pages(
    pid: int, root: Path = DEFAULT_ROOT, start_ticks: int | None = None
) -> ProcessPages:
    """Walk one process's mappings and read the frame of every present page.

    Raises NoSuchProcess (or ZombieProcess) when the process exits during the walk, checked
    *after* the walk: an exited process's pagemap reads as empty, which would otherwise
    count as a process with no pages. Raises ExactUnavailable when frames are hidden, and
    MappingChanged when pagemap fails twice for the same range.
    """
    mappings = tuple(read_maps(pid, root))
    firsts, counts, numbers = read_plan(mappings)
    pieces: list[U64] = []
    page_numbers: list[I64] = []
    swapped = 0
    with _pagemap(pid, root) as fd:
        for first, count in zip(firsts.tolist(), counts.tolist(), strict=True):
            for attempt in range(2):
                try:
                    # A short read (past the user address space, or a process whose memory
                    # is gone) leaves the rest absent; _check_alive tells the two apart.
                    entries, _short = _read_entries(fd, first, count)
                    break
                except OSError as err:
                    if err.errno == errno.ESRCH:
                        raise NoSuchProcess(pid) from None
                    # EIO, EFAULT, ENOMEM...: the mapping changed under the reader. Retry
                    # once; a second failure skips the process rather than guess.
                    if attempt == 1:
                        raise MappingChanged(f"pid {pid}: {err.strerror}") from None
            decoded = decode_pagemap(entries)
            if decoded.swapped:
                swapped += decoded.swapped
            if len(decoded.frames):
                pieces.append(decoded.frames)
                page_numbers.append(decoded.positions.astype(np.int64) + first)
    _check_alive(pid, root, start_ticks)
    every = np.concatenate(pieces) if pieces else np.empty(0, np.uint64)
    where = np.concatenate(page_numbers) if page_numbers else np.empty(0, np.int64)
    mapping_of = assign_pages(where, mappings, numbers)
    if frames_hidden(every):
        raise ExactUnavailable.because(
            FallbackCause.PERMISSION,
            "pagemap reads every frame number as 0: the kernel hides them from readers "
            "without CAP_SYS_ADMIN (Linux 4.2+)",
        )
    # Frames in the holes between merged mappings (none: holes read as absent) or in
    # skipped PROT_NONE mappings are dropped, and so are frame 0 entries of special
    # mappings (VM_PFNMAP): they are not RAM.
    keep = (mapping_of >= 0) & (every != 0)
    if not np.all(keep):
        every, mapping_of = every[keep], mapping_of[keep]
    return ProcessPages(
        pid=pid, mappings=mappings, frames=every, mapping_of=mapping_of, swapped=swapped
    )


def _check_alive(pid: int, root: Path, start_ticks: int | None) -> None:
    stat = read_stat(pid, root)
    if start_ticks is not None and stat.start_ticks != start_ticks:
        raise ReplacedProcess(pid, stat.comm)
    if stat.state in ("Z", "X"):
        raise ZombieProcess(pid, stat.comm, stat.ppid)


def exact_unavailable(root: Path = DEFAULT_ROOT) -> ExactFallback | None:
    """Why the exact tier cannot run here, or None when kpagecount and kpageflags open.

    Hidden frame numbers are found only by reading a process's pagemap (the walk does).
    """
    for name in ("kpagecount", "kpageflags"):
        fallback = _open_failure(root / "proc" / name)
        if fallback is not None:
            return fallback
    return None


def _open_failure(path: Path) -> ExactFallback | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return ExactFallback(
            cause=FallbackCause.NO_KPAGEFLAGS,
            reason=f"this kernel has no {path} (built without CONFIG_PROC_PAGE_MONITOR)",
        )
    except PermissionError:
        return ExactFallback(
            cause=FallbackCause.PERMISSION, reason=f"{path} is readable by root only"
        )
    except OSError as err:
        return ExactFallback(
            cause=FallbackCause.PERMISSION, reason=f"cannot open {path}: {err.strerror}"
        )
    os.close(fd)
    return None


def read_frames(frames: U64, root: Path = DEFAULT_ROOT) -> tuple[U64, U64]:
    """kpagecount and kpageflags of sorted distinct ``frames``, in coalesced spans."""
    starts, lengths = coalesce(frames)
    results = []
    for name in ("kpagecount", "kpageflags"):
        path = root / "proc" / name
        fallback = _open_failure(path)
        if fallback is not None:
            raise ExactUnavailable(fallback)
        fd = os.open(path, os.O_RDONLY)

        def read(first: int, count: int, fd: int = fd) -> bytes:
            return os.pread(fd, count * ENTRY, first * ENTRY)

        try:
            results.append(gather_spans(frames, starts, lengths, read))
        finally:
            os.close(fd)
    return results[0], results[1]


@dataclasses.dataclass(frozen=True, slots=True)
class Walk:
    """One exact walk of a workload: what was read, how it classifies, and the record."""

    processes: tuple[ProcessPages, ...]
    skipped: tuple[tuple[int, str], ...]  # (pid, reason) of processes that were not walked
    classification: Classification
    counts: PageCounts


def measure(
    members: Sequence[tuple[int, int | None]],
    parent_count: int,
    root: Path = DEFAULT_ROOT,
    *,
    page_size: int = PAGE_SIZE,
) -> Walk:
    """Walk every process (parents first, then workers in fork order) and classify.

    ``members`` are ``(pid, start_ticks)``. A process that exits, turns zombie, is
    replaced or keeps changing its mappings during the walk is skipped and listed in
    ``skipped``; ``PageCounts.parent_count`` then counts only the parents walked.
    """
    began = time.perf_counter()
    walked: list[ProcessPages] = []
    skipped: list[tuple[int, str]] = []
    parents_walked = 0
    for position, (pid, start_ticks) in enumerate(members):
        try:
            pages = read_process_pages(pid, root, start_ticks)
        except ZombieProcess:
            skipped.append((pid, "zombie"))
            continue
        except ReplacedProcess:
            skipped.append((pid, "replaced"))
            continue
        except NoSuchProcess:
            skipped.append((pid, "vanished"))
            continue
        except MappingChanged:
            skipped.append((pid, "changed"))
            continue
        walked.append(pages)
        if position < parent_count:
            parents_walked += 1
    index = index_pages([p.frames for p in walked], parents_walked)
    kpagecount, flags = read_frames(index.frames, root)
    cls = classify(index, kpagecount, flags)
    counts = summarise(
        cls,
        [p.pid for p in walked],
        page_size=page_size,
        swapped_pages=sum(p.swapped for p in walked),
        read_seconds=time.perf_counter() - began,
        skipped=len(skipped),
    )
    return Walk(processes=tuple(walked), skipped=tuple(skipped), classification=cls, counts=counts)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadWalk:
    """``walk_workload``'s answer: who stayed, what was walked, who was lost on the way.

    ``walk`` is None when a parent was lost: without it the walk has no base, and the
    caller keeps its smaps figures (estimate) or falls back to smaps (inspect).
    """

    processes: tuple[ProcessMemory, ...]
    walk: Walk | None
    skipped: tuple[Skipped, ...]


def walk_workload(processes: Sequence[ProcessMemory], root: Path = DEFAULT_ROOT) -> WorkloadWalk:
    """The exact walk over processes just read, parents first, workers in fork order.

    A process that exits or changes during the walk leaves the result and is listed as
    skipped, so the smaps figures and the pages describe the same processes. The one walk
    that ``capplan estimate`` and ``capplan inspect`` share; raises ExactUnavailable.
    """
    ordered = sorted(processes, key=lambda p: (p.role != "parent", p.start_ticks, p.pid))
    parents = sum(p.role == "parent" for p in ordered)
    walk = measure([(p.pid, p.start_ticks) for p in ordered], parents, root)
    lost = dict(walk.skipped)
    skipped = tuple(
        Skipped(pid=p.pid, name=p.name, reason=lost[p.pid])  # type: ignore[arg-type]
        for p in ordered
        if p.pid in lost
    )
    kept = tuple(p for p in processes if p.pid not in lost)
    return WorkloadWalk(
        processes=kept,
        walk=walk if walk.counts.parent_count >= parents else None,
        skipped=skipped,
    )


def parent_lost() -> ExactFallback:
    return ExactFallback(
        cause=FallbackCause.PROCESS_LOST,
        reason="the parent exited or changed during the page walk",
    )
