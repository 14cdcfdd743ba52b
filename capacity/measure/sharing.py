"""Who maps each physical page: the exact tier's pure part, on numpy arrays.

Decode pagemap entries, coalesce frame numbers into spans to read, index every distinct
page by the processes that map it, and classify it (parent only, shared with the parent,
shared among workers, private to one worker, shared with the rest of the host) with
kpagecount and kpageflags. No I/O: ``pages`` reads, this counts."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from capacity.records import PageCounts

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
ENTRY = 8  # bytes per pagemap / kpagecount / kpageflags entry
U64 = npt.NDArray[np.uint64]


I64 = npt.NDArray[np.int64]


IntP = npt.NDArray[np.intp]


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


MAX_GAP = 512  # merge frame spans closer than this (4 KiB of kpagecount per gap)


MAX_SPAN = 1 << 20  # frames per kpagecount pread: 8 MiB


def _flag(flags: U64, bit: int) -> npt.NDArray[np.bool_]:
    return np.asarray((flags & np.uint64(1 << bit)) != 0, dtype=bool)


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
