"""The records of shared memory segments: what a server maps and will fill (issue 14).

A pre-forking server often maps a shared memory segment at start and fills it with use:
PostgreSQL's main segment (shared_buffers and the rest, a shared anonymous mapping since
9.3), php's opcache, apache2's scoreboard, any SysV segment, POSIX shm file or memfd. A
sample counts the pages touched so far; at the limit the whole segment is resident.

* ``ShmMapping``: one process's mappings of one segment, from its smaps
  (``measure/shmem``): the mapped size beside the pages resident in it.
* ``ShmSegment``: one segment of the workload, counted once across its processes
  (``model/shmem``): its configured (mapped) size, the part touched, what is counted.
* ``SharedMemory``: the choice (``--shm auto``, the default, ``configured`` or
  ``touched``) and the segments, saved in the ``Estimate``.

A segment's name is host text, stored raw: only ``capacity.render`` escapes it.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# "sysv": /proc/sysvipc/shm, mapped as /SYSV<key> (deleted); "posix": a file in /dev/shm;
# "memfd": memfd_create(2); "anonymous": mmap(MAP_SHARED | MAP_ANONYMOUS), which the
# kernel backs with a shmem file it names /dev/zero (deleted) ([anon_shmem:NAME] since 6.2).
ShmKind = Literal["sysv", "posix", "memfd", "anonymous"]

# "auto" (the default): the point answer counts the pages resident when sampled, the
# conservative one each segment at its mapped size (whether a segment fills is the
# workload's: opcache's 128 MiB cap rarely does, shared_buffers does once the data outgrows
# it); "configured": both at the mapped size (a segment the operator knows fills);
# "touched": both as resident when sampled (a segment the operator knows stays cold).
ShmChoice = Literal["auto", "configured", "touched"]
SHM_CHOICES: tuple[ShmChoice, ...] = ("auto", "configured", "touched")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ShmMapping:
    """One process's mappings of one shared segment (its VMAs summed).

    ``key`` names the segment on the host: the device and inode of the maps line (a SysV
    segment's inode is its shmid; each shared anonymous mapping has a shmem inode of its
    own, inherited over fork), so two processes mapping it give the same key.
    ``private_bytes`` (Private_Clean + Private_Dirty) are its pages this process alone maps:
    smaps puts them in the process's USS, which for a worker is its marginal cost.
    """

    key: str
    kind: ShmKind
    name: str
    size_bytes: int
    rss_bytes: int
    pss_bytes: int
    private_bytes: int
    swap_bytes: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ShmSegment:
    """One segment of the workload, counted once across its processes (one sample).

    ``configured_bytes`` is its mapped size (the largest mapping of it), ``touched_bytes``
    its pages the workload's processes have resident (their Pss summed: each page once),
    ``counted_bytes`` what the fixed cost counts for it under the choice.
    """

    key: str
    kind: ShmKind
    name: str
    configured_bytes: int
    touched_bytes: int
    counted_bytes: int
    processes: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SharedMemory:
    """How the fit counted the workload's shared memory segments (Estimate.shared_memory).

    ``segments`` are the last fitted sample's. ``untouched_bytes`` is what the fixed cost
    holds beyond the touched pages (the segments' configured size less their touched
    part, mean over the fitted samples; 0 under "touched"). ``moved_bytes`` are segment
    pages a single worker had touched alone, which smaps counts in that worker's USS: they
    are paid once, so they move from the per-worker cost to the fixed cost (mean per
    sample, all workers together) under every choice. ``kept_bytes`` is the segments'
    untouched rest that only the conservative answer keeps (under "auto"; 0 otherwise).
    """

    choice: ShmChoice
    segments: tuple[ShmSegment, ...] = ()
    untouched_bytes: int = 0
    moved_bytes: int = 0
    kept_bytes: int = 0
