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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from capacity.errors import ExactUnavailable, NoSuchProcess, ReplacedProcess, ZombieProcess
from capacity.measure.procfs import DEFAULT_ROOT, proc_dir, read_maps, read_stat
from capacity.measure.procparse import Mapping
from capacity.measure.sharing import (
    ENTRY,
    I64,
    NOT_COUNTED,
    PAGE_SIZE,
    U64,
    Classification,
    classify,
    coalesce,
    decode_pagemap,
    frames_hidden,
    gather_spans,
    index_pages,
    summarise,
)
from capacity.records import ExactFallback, FallbackCause, PageCounts, ProcessMemory, Skipped

CHUNK_PAGES = 1 << 19  # pagemap entries per pread: 4 MiB
MERGE_GAP = 4096  # read neighbouring mappings together across holes up to 16 MiB (32 KiB)


# --------------------------------------------------------------------------- pure: pagemap


# --------------------------------------------------------------------------- pure: frames


# --------------------------------------------------------------------------- pure: sharing


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


def walk_groups(
    groups: Sequence[Sequence[ProcessMemory]],
    beside: Sequence[Sequence[ProcessMemory]],
    root: Path = DEFAULT_ROOT,
) -> tuple[tuple[WorkloadWalk, ...], tuple[Skipped, ...]]:
    """The exact walk of several groups of one selection (issue 13), each process read
    once, counted per group as ``walk_workload`` counts one workload.

    ``beside[i]`` are processes that share group i's instance without being in it (the
    other pools of its php-fpm master): pages they map are not "outside" for group i (the
    master's pages its pools' children all map stay in the master's, that is group i's,
    fixed cost), but they add nothing to group i's total, and pages only they map are not
    counted. A process lost while it was read leaves every group; a group that loses a
    parent has no walk (None), as in ``walk_workload``.
    """
    began = time.perf_counter()
    wanted: dict[tuple[int, int | None], ProcessMemory] = {}
    for members in (*groups, *beside):
        for p in members:
            wanted.setdefault((p.pid, p.start_ticks), p)
    read: dict[int, ProcessPages] = {}
    lost: dict[int, str] = {}
    for pid, start_ticks in wanted:
        try:
            read[pid] = read_process_pages(pid, root, start_ticks)
        except ZombieProcess:
            lost[pid] = "zombie"
        except ReplacedProcess:
            lost[pid] = "replaced"
        except NoSuchProcess:
            lost[pid] = "vanished"
        except MappingChanged:
            lost[pid] = "changed"
    seconds = time.perf_counter() - began
    walks = []
    for members, others in zip(groups, beside, strict=True):
        ordered = sorted(members, key=lambda p: (p.role != "parent", p.start_ticks, p.pid))
        parents = sum(p.role == "parent" for p in ordered)
        kept = [p for p in ordered if p.pid in read]
        parents_kept = sum(p.role == "parent" for p in kept)
        own = {p.pid for p in members}
        extra = [read[p.pid] for p in others if p.pid in read and p.pid not in own]
        walk = None
        if kept and parents_kept >= parents:
            walk = _count_walk(
                [read[p.pid] for p in kept],
                parents_kept,
                extra,
                root,
                seconds,
                len(ordered) - len(kept),
            )
        walks.append(
            WorkloadWalk(
                processes=tuple(p for p in members if p.pid in read),
                walk=walk,
                skipped=tuple(
                    Skipped(pid=p.pid, name=p.name, reason=lost[p.pid])  # type: ignore[arg-type]
                    for p in ordered
                    if p.pid in lost
                ),
            )
        )
    everyone = {p.pid: p for p in wanted.values()}
    skipped = tuple(
        Skipped(pid=pid, name=everyone[pid].name, reason=reason)  # type: ignore[arg-type]
        for pid, reason in lost.items()
    )
    return tuple(walks), skipped


def _count_walk(
    walked: Sequence[ProcessPages],
    parent_count: int,
    beside: Sequence[ProcessPages],
    root: Path,
    read_seconds: float,
    skipped: int,
    page_size: int = PAGE_SIZE,
) -> Walk:
    """Index and classify ``walked`` (parents first), with ``beside`` mapping pages but
    adding none (``walk_groups``)."""
    index = index_pages([p.frames for p in (*walked, *beside)], parent_count)
    kpagecount, flags = read_frames(index.frames, root)
    cls = classify(index, kpagecount, flags)
    if beside:
        # A page only the processes beside map is none of the group's; the group's totals
        # and classes end with its own processes.
        sharing = cls.sharing.copy()
        sharing[index.first_owner >= len(walked)] = NOT_COUNTED
        cls = dataclasses.replace(
            cls, sharing=sharing, index=dataclasses.replace(index, process_count=len(walked))
        )
    counts = summarise(
        cls,
        [p.pid for p in walked],
        page_size=page_size,
        swapped_pages=sum(p.swapped for p in walked),
        read_seconds=read_seconds,
        skipped=skipped,
    )
    return Walk(processes=tuple(walked), skipped=(), classification=cls, counts=counts)


def parent_lost() -> ExactFallback:
    return ExactFallback(
        cause=FallbackCause.PROCESS_LOST,
        reason="the parent exited or changed during the page walk",
    )
