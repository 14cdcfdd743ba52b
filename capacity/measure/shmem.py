"""Shared memory segments a process maps: their mapped size beside their resident pages.

What counts as a shared memory segment (``shm_kind``): a mapping with the shared flag
(``s`` in the maps permissions) backed by shmem, whose kernel names are

* ``/SYSV<key> (deleted)``: a SysV segment (shmat); its inode is the shmid, as
  /proc/sysvipc/shm lists it;
* ``/dev/zero (deleted)`` or ``[anon_shmem:NAME]`` (Linux 6.2+): mmap(MAP_SHARED |
  MAP_ANONYMOUS), PostgreSQL's main segment (``shared_memory_type = mmap``), php's opcache,
  apache2's scoreboard; each mapping call makes a shmem file of its own, inherited over fork;
* ``/dev/shm/NAME`` (and ``/run/shm/``): a POSIX shm file (shm_open), PostgreSQL's dynamic
  shared memory;
* ``/memfd:NAME (deleted)``: memfd_create(2).

Private mappings of them (copy-on-write) and shared mappings of ordinary files (page cache,
reclaimable) are not segments. Hugetlb segments are left out (``Shared_Hugetlb``): their
pages are reserved from the huge page pool when the segment is made, and the accounting
already counts them once.

A segment is named on the host by the device and inode of its maps line (``key``), so the
processes that map it are counted once (``model/shmem``). The parsers are pure (bytes in,
records out, as ``procparse``); ``read_shm`` reads one process's smaps. The sampler asks
only of the processes whose maps show a segment (``maps_show_shm``, once per process), so
the others cost no smaps read.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from capacity.measure.procfs import DEFAULT_ROOT, proc_file, read_maps, read_smaps
from capacity.measure.procparse import Mapping, SmapsEntry, parse_smaps
from capacity.shmem_records import ShmKind, ShmMapping

_DELETED = " (deleted)"


def shm_kind(mapping: Mapping) -> ShmKind | None:
    """The kind of shared memory segment ``mapping`` is, or None when it is not one."""
    if mapping.perms[3:4] != "s":
        return None
    path = mapping.path
    if path.startswith("/SYSV"):
        return "sysv"
    if path == "/dev/zero" + _DELETED or path.startswith("[anon_shmem:"):
        return "anonymous"
    if path.startswith(("/dev/shm/", "/run/shm/")):
        return "posix"
    if path.startswith("/memfd:"):
        return "memfd"
    return None


def segment_name(mapping: Mapping, kind: ShmKind) -> str:
    """How the segment is named to the reader: the path without `` (deleted)``, and a
    shared anonymous mapping as ``[shared anonymous]`` (its /dev/zero says nothing)."""
    if kind == "anonymous" and not mapping.path.startswith("[anon_shmem:"):
        return "[shared anonymous]"
    return mapping.path.removesuffix(_DELETED)


def maps_show_shm(mappings: Sequence[Mapping]) -> bool:
    """Whether a process's maps hold a shared memory segment (``shm_kind``)."""
    return any(shm_kind(m) is not None for m in mappings)


def parse_shm_mappings(data: bytes, path: str = "smaps") -> tuple[ShmMapping, ...]:
    """A process's shared memory segments from the bytes of its /proc/PID/smaps."""
    return shm_mappings(parse_smaps(data, path))


def shm_mappings(entries: Sequence[SmapsEntry]) -> tuple[ShmMapping, ...]:
    """The shared memory segments among smaps entries, one per segment (a segment mapped
    by several VMAs, say split by mprotect, has them summed), in the order of their first
    mapping."""
    found: dict[str, ShmMapping] = {}
    for entry in entries:
        mapping = entry.mapping
        kind = shm_kind(mapping)
        fields = entry.fields
        if (
            kind is None
            or fields.get("shared_hugetlb_bytes")
            or fields.get("private_hugetlb_bytes")
        ):
            continue
        key = f"{mapping.dev}:{mapping.inode}"
        this = ShmMapping(
            key=key,
            kind=kind,
            name=segment_name(mapping, kind),
            size_bytes=mapping.size,
            rss_bytes=fields.get("rss_bytes", 0),
            pss_bytes=fields.get("pss_bytes", 0),
            private_bytes=fields.get("private_clean_bytes", 0)
            + fields.get("private_dirty_bytes", 0),
            swap_bytes=fields.get("swap_bytes", 0),
        )
        before = found.get(key)
        if before is not None:
            this = dataclasses.replace(
                before,
                size_bytes=before.size_bytes + this.size_bytes,
                rss_bytes=before.rss_bytes + this.rss_bytes,
                pss_bytes=before.pss_bytes + this.pss_bytes,
                private_bytes=before.private_bytes + this.private_bytes,
                swap_bytes=before.swap_bytes + this.swap_bytes,
            )
        found[key] = this
    return tuple(found.values())


def read_maps_show_shm(pid: int, root: Path = DEFAULT_ROOT, name: str | None = None) -> bool:
    """Whether process ``pid`` maps a shared memory segment (one read of its maps)."""
    return maps_show_shm(read_maps(pid, root, name))


def read_shm(
    pid: int, root: Path = DEFAULT_ROOT, name: str | None = None
) -> tuple[ShmMapping, ...] | None:
    """Process ``pid``'s shared memory segments from its smaps; None where a captured tree
    (``root``) holds no smaps for it: not known, which is not none."""
    if root != DEFAULT_ROOT and not os.path.exists(proc_file(pid, root, "smaps")):
        return None
    return shm_mappings(read_smaps(pid, root, name))
