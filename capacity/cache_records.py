"""The records of the workload's file working set: its page cache, hot and cold (issue 14).

PostgreSQL reads its tables with read(): the page cache that holds them is in no process's
mappings, so no per-process figure shows it. Two readings find it (``measure/filecache``):

* the workload's own memory cgroup: its file LRU lists (active and inactive) and its
  refault counters, in ``Snapshot.cgroup.stat`` with every sample;
* for a workload without a cgroup of its own, the files its processes hold open or map,
  probed once after the samples: how much of each is in the page cache (``cachestat(2)``
  or ``mincore(2)``) and, as root, how much of that is on the active list (the page flags
  of the cached pages, ``/proc/kpageflags``). ``FileProbe`` and ``CachedFile`` carry it.

``model/filecache`` classifies either into ``FileCache``: hot (needed: evicting it costs
refaults and stalls) and cold (reclaimable without harm). Kept apart from ``records`` as
one concern; a bottom module. File names are host text, stored raw: only
``capacity.render`` escapes them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# How the residency of a file was read: cachestat(2) (Linux 6.5+) or mincore(2) on a fresh
# read-only mapping of it (any kernel; residency only).
ProbeCall = Literal["cachestat", "mincore"]
# Where the hot part came from: the cgroup's LRU lists and refaults, the page flags of each
# cached page (root), or nowhere (then every cached byte of the probed files counts as hot:
# the conservative answer must stay safe).
Hotness = Literal["cgroup", "kpageflags", "unknown"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CachedFile:
    """One file the workload holds open or maps, probed once (each device+inode once).

    ``probed_bytes`` is the part of the file that was looked at (``size_bytes`` up to the
    cap per file); every other figure is within it. ``active_bytes`` None: the page flags
    could not be read (not root). ``dirty_bytes``, ``writeback_bytes``, ``evicted_bytes``
    and ``recently_evicted_bytes`` come from cachestat only (None with mincore); recently
    evicted pages are those whose shadow entry says a new read would refault them into the
    active list (mm/workingset.c): the file's working set does not fit its cache.
    """

    path: str
    device: int
    inode: int
    size_bytes: int
    probed_bytes: int
    cached_bytes: int
    mapped: bool  # some process of the workload maps it (else it is only read())
    active_bytes: int | None = None
    dirty_bytes: int | None = None
    writeback_bytes: int | None = None
    evicted_bytes: int | None = None
    recently_evicted_bytes: int | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileProbe:
    """The per-file reading of a workload's page cache (``measure/filecache.probe_files``).

    ``files`` are the probed files with any page cached, largest cache first; ``skipped``
    counts open or mapped entries that are not regular files on a disk-backed file system
    (pipes, sockets, devices, tmpfs and shared memory, /proc), or that vanished or could
    not be opened; ``truncated`` the files larger than the cap per file (probed up to it)
    and ``over_limit`` the files left out once the cap on files was reached.
    """

    call: ProbeCall
    hotness: Hotness
    files: tuple[CachedFile, ...]
    files_probed: int
    skipped: int = 0
    truncated: int = 0
    over_limit: int = 0
    max_files: int
    max_bytes_per_file: int
    read_seconds: float = 0.0
    note: str = ""


FileCacheSource = Literal["cgroup", "files"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileCache:
    """The workload's page cache, hot and cold, with its evidence (``model/filecache``).

    ``cached_bytes`` = ``hot_bytes`` + ``cold_bytes``: the file pages on the LRU lists
    (shared memory and tmpfs are not in it: they are not reclaimable without swap). Hot is
    needed, cold can be reclaimed without harm; ``rule`` says how they were told apart.
    ``kept_bytes`` is what the conservative answer keeps resident for it beyond what it
    already kept (the workload's mapped file pages paid once, in ``reclaimable_bytes``);
    the point answer keeps none of it (the kernel reclaims page cache before it OOM-kills).

    Evidence: ``active_bytes``/``inactive_bytes`` the LRU lists (cgroup) or the cached
    pages with and without the active flag (files, as root: of the files whose flags were
    read; a file without them counts hot whole); ``refaults_per_second`` and
    ``activations_per_second`` the cgroup's ``workingset_refault_file`` and
    ``workingset_activate_file`` between the first and the last sample (None where the
    kernel has no such counter, or one sample); ``recently_evicted_bytes`` (files,
    cachestat) pages evicted so recently that reading them again refaults them.
    """

    source: FileCacheSource
    hotness: Hotness
    cached_bytes: int
    hot_bytes: int
    cold_bytes: int
    rule: str
    kept_bytes: int = 0
    active_bytes: int | None = None
    inactive_bytes: int | None = None
    mapped_bytes: int | None = None  # cgroup: file_mapped; files: cache of the mapped files
    refaults_per_second: float | None = None
    activations_per_second: float | None = None
    refaulted_bytes: int | None = None  # refaults in the window, times the page size
    recently_evicted_bytes: int | None = None
    window_seconds: float = 0.0
    cgroup: str | None = None
    probe: FileProbe | None = None
    note: str = ""
