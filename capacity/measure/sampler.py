"""The only module that reads the live host over time.

``collect`` takes K snapshots S seconds apart. Each snapshot re-selects the workload (a
pre-forking server starts and stops workers), then reads every member's smaps_rollup,
status and stat (and the smaps of a process that maps a shared memory segment,
``measure/shmem``). Policy on processes that misbehave lives here, and only here:

* a process that exits, turns zombie or is replaced by a new one with the same pid between
  selection and reading is skipped and counted in ``Snapshot.skipped``: that is churn;
* a process we may not read stops the run with ``AccessDenied``: summing the ones we can
  read would give a silently wrong answer, which is worse than none.

What does not change while a process lives (its command line, its mapping counts) is read
once per identity ``(pid, start_ticks)`` and cached, so later samples cost only the rollup,
status and stat reads.

The exact tier (``capacity.measure.pages``) walks every page table of the workload. It costs far
more than a rollup read and takes the same mmap lock, so it runs on some samples only:
the first and the last, and every ``exact_every``-th between them when asked
(``exact_indices``). When it cannot run (no permission, no kpageflags, frame numbers
hidden), the sampler remembers why in ``fallback`` (an ``ExactFallback`` with its cause)
and stops trying; with ``method=Method.EXACT`` it raises ``ExactUnavailable`` instead. Nor does it walk a workload
with a process over ``capacity.measure.gentle``'s thresholds (4 GiB resident or 10,000 mappings)
unless ``deep`` is set: that refusal is a fallback like the others.

The members are read on ``readers`` threads (two where the host has two CPUs:
``capacity.measure.parallel``), so that two page-table walks run at once; each process is still
read by one thread at a time.

With a ``grouping`` (``measure/groups``: the selection's groups, issue 13), each sample's
processes take their roles from it (a worker is one in its group's worker role, every
other process is fixed cost), and the exact walk is one walk per group, kept in
``group_pages`` by sample index: a group's pages are counted apart from the other groups'.
``Snapshot.pages`` is then the one group's walk, or None with several.

``Snapshot.read_seconds`` is the time of the member reads alone (smaps_rollup, status and
stat of every process, plus maps once per new process): not the selection scan, the host
and cgroup figures, nor the exact walk, whose time is ``PageCounts.read_seconds``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from capacity.errors import (
    CapplanError,
    ExactUnavailable,
    KernelThread,
    NoSuchProcess,
    SelectionError,
    ZombieProcess,
)
from capacity.measure import gentle, pages, shmem
from capacity.measure.cgroup import Layout, cgroup_holding, detect_layout, workload_cgroup
from capacity.measure.cgroupselect import Target
from capacity.measure.groups import Grouping
from capacity.measure.kernel import kernel_stack_size, page_table_span, slab_estimate
from capacity.measure.parallel import default_threads, map_ordered
from capacity.measure.procfs import (
    CLOCK_TICKS,
    DEFAULT_ROOT,
    read_maps_counts,
    read_meminfo,
    read_rollup,
    read_slab_object_sizes,
    read_stat,
    read_status,
)
from capacity.measure.workload import (
    Member,
    NameCache,
    Selector,
    resolve_target,
    select_processes,
)
from capacity.records import (
    CgroupMemory,
    ExactFallback,
    Method,
    PageCounts,
    ProcessMemory,
    Skipped,
    Snapshot,
)

ProgressCallback = Callable[[int, int], None]


def exact_indices(samples: int, every: int | None = None) -> set[int]:
    """Which samples take an exact page walk: the first, the last, and every Nth."""
    chosen = {0, samples - 1}
    if every:
        chosen |= set(range(0, samples, every))
    return chosen


@dataclasses.dataclass
class Sampler:
    """Reads one workload repeatedly; keeps the per-identity cache between snapshots."""

    selector: Selector | None  # None in launch mode: the members come from the launcher
    root: Path = DEFAULT_ROOT
    # None: exact where it can run, else smaps (``fallback`` says why); EXACT insists on
    # the exact walk (ExactUnavailable otherwise); SMAPS never walks.
    method: Method | None = Method.SMAPS
    deep: bool = False
    readers: int = dataclasses.field(default_factory=default_threads)
    fallback: ExactFallback | None = dataclasses.field(init=False, default=None)
    # Pids that are never the workload (the load generator's), asked for at every sample.
    exclude: Callable[[], frozenset[int]] | None = None
    # --cgroup and --unit: the cgroup selected, resolved once (here unless given); its
    # memory cgroup is the one read with every snapshot (the budget's limit, the kernel
    # calibration).
    target: Target | None = None
    # The selection's groups (issue 13): roles from them, one exact walk per group.
    grouping: Grouping | None = None
    group_pages: dict[int, tuple[PageCounts | None, ...]] = dataclasses.field(
        init=False, default_factory=dict
    )
    layout: Layout = dataclasses.field(init=False)
    slab_sizes: dict[str, int] = dataclasses.field(init=False)
    stack_size: int = dataclasses.field(init=False)
    _maps_cache: dict[tuple[int, int], tuple[int, int, int]] = dataclasses.field(
        init=False, default_factory=dict
    )
    # Per identity: whether its maps show a shared memory segment (``measure/shmem``), so
    # that only those processes have their smaps read at every sample.
    _shm_cache: dict[tuple[int, int], bool] = dataclasses.field(init=False, default_factory=dict)
    _names: NameCache = dataclasses.field(init=False, default_factory=dict)
    _slab_cache: dict[tuple[int, int, int], int] = dataclasses.field(
        init=False, default_factory=dict
    )
    _started: float | None = dataclasses.field(init=False, default=None)
    _walks: int = dataclasses.field(init=False, default=0)  # exact walks tried, and done
    _walked: int = dataclasses.field(init=False, default=0)
    # The parents of the first snapshot, by identity: a later snapshot without one of them
    # measures another workload (a restart, or a reused pid), never the one asked for.
    _parents: dict[int, tuple[int, str]] | None = dataclasses.field(init=False, default=None)

    def __post_init__(self) -> None:
        self.layout = detect_layout(self.root)
        if self.selector is not None and self.target is None:
            self.target = resolve_target(self.selector, self.root)
        self.slab_sizes = read_slab_object_sizes(self.root)
        self.stack_size = kernel_stack_size()
        if self.method != Method.SMAPS:
            fallback = pages.exact_unavailable(self.root)
            if fallback is not None:
                self._exact_failed(ExactUnavailable(fallback))

    def _exact_failed(self, err: ExactUnavailable) -> None:
        if self.method == Method.EXACT:
            raise err
        self.fallback = err.fallback

    def exact_fallback(self) -> ExactFallback | None:
        """Why the exact method was wanted and not used, after the samples were taken.

        None when it was used or not wanted. A walk that was tried on every chosen sample
        and never kept (the parent exited or changed each time) is a fallback too, and an
        error under ``method=Method.EXACT``.
        """
        if self.method == Method.SMAPS:
            return None
        if self.fallback is None and self._walks and not self._walked:
            if self.method == Method.EXACT:
                raise CapplanError(
                    "exact page accounting failed: no exact page walk was usable "
                    "(the parent exited or changed during it)"
                )
            self.fallback = pages.parent_lost()
        return self.fallback

    def snapshot(self, index: int, exact: bool = False) -> Snapshot:
        """Select the workload and read every member once; walk its pages if ``exact``."""
        if self.selector is None:
            raise ValueError("a Sampler without a selector reads given members: use read_members")
        excluded = self.exclude() if self.exclude is not None else frozenset()
        try:
            selection = select_processes(
                self.selector, self.root, exclude=excluded, names=self._names, target=self.target
            )
        except SelectionError:
            if self._parents is not None and self.selector.pid in self._parents:
                self._parents_lost({})  # the --pid process is gone: say so, not "no pid"
            raise
        now = {m.pid: m.start_ticks for m in selection.parents}
        if self._parents is None:
            self._parents = {m.pid: (m.start_ticks, m.name) for m in selection.parents}
        else:
            self._parents_lost(now)
        damaged = tuple(
            Skipped(pid=pid, name="?", reason="unreadable") for pid in selection.unreadable
        )
        return self.read_members(
            index, selection.members, str(self.selector), exact=exact, skipped=damaged
        )

    def _parents_lost(self, now: dict[int, int]) -> None:
        """Raise when a parent of the first snapshot is gone or its pid was reused.

        Identity is (pid, start time in /proc/PID/stat): a pid reused by an unrelated
        process has a later start time. Without this, the newcomer would be measured as
        the workload, or orphaned workers counted as parents of nothing.
        """
        assert self._parents is not None
        for pid, (start, name) in sorted(self._parents.items()):
            if now.get(pid) == start:
                continue
            reused = pid in now
            raise SelectionError(
                f"the workload's parent, pid {pid} ({name}), "
                + (
                    "was replaced: another process now has its pid"
                    if reused
                    else "exited while capplan was sampling"
                ),
                hint=f"measure it again once it is up: capplan estimate {self.selector}",
            )

    def read_members(
        self,
        index: int,
        members: Sequence[Member],
        label: str,
        cgroup: CgroupMemory | None = None,
        exact: bool = False,
        skipped: Sequence[Skipped] = (),
    ) -> Snapshot:
        """Read these members once; ``cgroup`` replaces the lookup of the workload's cgroup
        (launch mode knows the cgroup it created; ``--cgroup`` and ``--unit`` name theirs,
        else it is the first process's memory cgroup); walk their pages if ``exact``.
        ``skipped`` are processes the selection could not use, reported with the rest."""
        now = time.time()
        if self._started is None:
            self._started = now
        processes: list[ProcessMemory] = []
        skipped = list(skipped)
        began = time.perf_counter()
        for result in map_ordered(self.read_member, members, self.readers):
            if isinstance(result, Skipped):
                skipped.append(result)
            else:
                processes.append(result)
        read_seconds = time.perf_counter() - began
        if self.grouping is not None:
            self.grouping.observe(processes)
            processes = list(self.grouping.relabel(processes))
        page_counts = None
        if exact and self.method != Method.SMAPS and self.fallback is None and processes:
            large = [] if self.deep else gentle.too_large(processes)
            if large:
                rerun = f"capplan estimate {self.selector}"
                self._exact_failed(ExactUnavailable(gentle.refused(large, rerun)))
            elif self.grouping is not None:
                processes, page_counts = self._walk_groups(index, processes, skipped)
            else:
                processes, page_counts = self._walk_pages(processes, skipped)
        if not processes:
            raise SelectionError(
                f"every process of {label} exited while it was being read",
                hint="is the workload restarting? measure it once it is up",
            )
        host = read_meminfo(self.root)
        pids = [p.pid for p in processes]
        if cgroup is None and self.target is not None and self.target.memory is not None:
            version, directory, mount = self.target.memory
            cgroup = cgroup_holding(version, directory, mount, pids)
        if cgroup is None:
            cgroup = workload_cgroup(pids, self.layout, self.root)
        return Snapshot(
            index=index,
            taken_at=now,
            elapsed_seconds=now - self._started,
            read_seconds=read_seconds,
            processes=tuple(processes),
            skipped=tuple(skipped),
            host=host,
            cgroup=cgroup,
            pages=page_counts,
        )

    def _walk_pages(
        self, processes: list[ProcessMemory], skipped: list[Skipped]
    ) -> tuple[list[ProcessMemory], PageCounts | None]:
        """The exact walk (``pages.walk_workload``); lost processes join ``skipped``. If a
        parent is lost, the snapshot keeps its smaps figures only."""
        self._walks += 1
        try:
            result = pages.walk_workload(processes, self.root)
        except ExactUnavailable as err:
            self._exact_failed(err)
            return processes, None
        skipped.extend(result.skipped)
        if result.walk is None:
            return list(result.processes), None
        self._walked += 1
        return list(result.processes), result.walk.counts

    def _walk_groups(
        self, index: int, processes: list[ProcessMemory], skipped: list[Skipped]
    ) -> tuple[list[ProcessMemory], PageCounts | None]:
        """The exact walk counted per group (``pages.walk_groups``: each process read
        once), each with the group's roles and its instance's other groups beside it; a
        process lost in the walk leaves the sample. The snapshot's own ``pages``: the one
        group's walk."""
        assert self.grouping is not None
        self._walks += 1
        split = self.grouping.split(processes)
        beside = [
            tuple(p for j in self.grouping.siblings(i) for p in split[j]) for i in range(len(split))
        ]
        try:
            results, lost = pages.walk_groups(split, beside, self.root)
        except ExactUnavailable as err:
            self._exact_failed(err)
            return processes, None
        skipped.extend(lost)
        walks = tuple(r.walk.counts if r.walk is not None else None for r in results)
        if any(walk is not None for walk in walks):
            self._walked += 1
        self.group_pages[index] = walks
        gone = {s.pid for s in lost}
        kept = [p for p in processes if p.pid not in gone]
        return kept, walks[0] if len(walks) == 1 else None

    def _slab(self, threads: int, mappings: int, writable_private: int) -> int:
        """``slab_estimate``, cached: the workers of a pool share a handful of shapes."""
        key = (threads, mappings, writable_private)
        found = self._slab_cache.get(key)
        if found is None:
            found = slab_estimate(threads, mappings, writable_private, self.slab_sizes)
            self._slab_cache[key] = found
        return found

    def read_member(self, member: Member) -> ProcessMemory | Skipped:
        """One process's memory, or why it was skipped. AccessDenied propagates."""
        pid, name = member.pid, member.name
        try:
            rollup, source = read_rollup(pid, self.root, name)
            status = read_status(pid, self.root, name)
            stat = read_stat(pid, self.root)
            if stat.start_ticks != member.start_ticks:
                return Skipped(pid=pid, name=name, reason="replaced")
            if stat.state == "Z" or not status.has_mm:
                return Skipped(pid=pid, name=name, reason="zombie")
            key = (pid, member.start_ticks)
            maps = self._maps_cache.get(key)
            if maps is None:
                maps = read_maps_counts(pid, page_table_span(), self.root, name)
                self._maps_cache[key] = maps
            shows_shm = self._shm_cache.get(key)
            if shows_shm is None:
                shows_shm = shmem.read_maps_show_shm(pid, self.root, name)
                self._shm_cache[key] = shows_shm
            # Per-mapping smaps is a deep read (measure/gentle): a process over its
            # thresholds keeps its segments unread (counted as touched) without --deep.
            gentle_enough = self.deep or (
                rollup.rss_bytes <= gentle.DEEP_RSS_BYTES and maps[0] <= gentle.DEEP_MAPPINGS
            )
            shm = (
                (shmem.read_shm(pid, self.root, name) or ()) if shows_shm and gentle_enough else ()
            )
        except ZombieProcess:
            return Skipped(pid=pid, name=name, reason="zombie")
        except KernelThread:
            return Skipped(pid=pid, name=name, reason="kernel thread")
        except NoSuchProcess:
            return Skipped(pid=pid, name=name, reason="vanished")
        mappings, writable_private, regions = maps
        threads = max(status.threads, 1)
        return ProcessMemory(
            pid=pid,
            start_ticks=member.start_ticks,
            ppid=stat.ppid,
            name=name,
            state=stat.state,
            role="parent" if member.role == "parent" else "worker",
            threads=threads,
            rollup=rollup,
            rss_anon_bytes=status.rss_anon_bytes,
            rss_file_bytes=status.rss_file_bytes,
            rss_shmem_bytes=status.rss_shmem_bytes,
            page_tables_bytes=status.vm_pte_bytes,
            kernel_stack_bytes=threads * self.stack_size,
            slab_bytes=self._slab(threads, mappings, writable_private),
            mappings=mappings,
            address_regions=regions,
            source="smaps" if source == "smaps" else "smaps_rollup",
            cpu_seconds=(stat.utime_ticks + stat.stime_ticks) / CLOCK_TICKS,
            voluntary_switches=status.voluntary_switches,
            nonvoluntary_switches=status.nonvoluntary_switches,
            shm=shm,
        )


def collect(
    selector: Selector,
    samples: int,
    interval: float,
    *,
    root: Path = DEFAULT_ROOT,
    on_progress: ProgressCallback | None = None,
    sampler: Sampler | None = None,
    method: Method | None = Method.SMAPS,
    exact_every: int | None = None,
) -> tuple[Snapshot, ...]:
    """``samples`` snapshots ``interval`` seconds apart (the first one immediately).

    Unless the method is SMAPS, the samples in ``exact_indices(samples, exact_every)``
    also take an exact page walk (``Snapshot.pages``).
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    sampler = sampler or Sampler(selector, root, method=method)
    walks = exact_indices(samples, exact_every)
    snapshots: list[Snapshot] = []
    next_at = time.monotonic()
    for index in range(samples):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        snapshots.append(sampler.snapshot(index, exact=index in walks))
        next_at += interval
        if on_progress is not None:
            on_progress(index + 1, samples)
    return tuple(snapshots)
