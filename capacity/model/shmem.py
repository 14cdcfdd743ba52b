"""Shared memory segments in the fixed cost: counted once, at their configured size.

A server that maps a shared memory segment fills it with use: PostgreSQL's shared_buffers
are read into as queries run, php's opcache fills as scripts compile. A sample sees the
pages touched so far; at the limit the whole segment is resident (issue 14 measured
PostgreSQL 15 under pgbench: 68 MiB touched when capplan sampled, about 98 MiB resident at
the OOM limit). So by default (``--shm configured``) each segment is counted at its mapped
size; ``--shm touched`` counts the pages resident in it when sampled, for a segment the
operator knows stays cold. The default, ``--shm auto``, counts the touched pages in the
point answer and keeps each segment's untouched rest in the conservative one only
(``ModelFit.shm_kept_bytes``): whether a segment fills is the workload's, not the
segment's. php's opcache is a 128 MiB cap by default that a small site never fills (the
php-fpm validation rows run 68 workers in 128 MiB); PostgreSQL's shared_buffers fill once
the data outgrows them. The safe answer assumes every segment fills; the point answer the
segments as they were.

The touched pages are in the fixed cost already (the parents' USS and every process's
PSS - USS), except the pages of a segment one worker alone has touched: smaps counts those
in that worker's USS, its marginal cost, and the exact walk as the worker's own pages. A
segment is paid once however many workers run, so under either choice those pages move
from the worker to the fixed cost (``moved``), and under "configured" the segment's
untouched rest is added (``untouched``): touched is replaced by configured, never added to
it. A segment is one key (device and inode) counted once across the processes, its
touched part their Pss summed (each resident page once), its configured size its largest
mapping. Private and file-backed mappings are never segments (``measure/shmem``).

Pure: records in, records out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from capacity.records import ProcessMemory, Snapshot
from capacity.shmem_records import SharedMemory, ShmChoice, ShmMapping, ShmSegment


def segments(snap: Snapshot, choice: ShmChoice) -> tuple[ShmSegment, ...]:
    """The sample's segments, each counted once across its processes, largest first."""
    seen: dict[str, list[ShmMapping]] = {}
    for process in snap.processes:
        for mapping in process.shm:
            seen.setdefault(mapping.key, []).append(mapping)
    found = []
    for key, mappings in seen.items():
        touched = sum(m.pss_bytes for m in mappings)
        configured = max(touched, *(m.size_bytes for m in mappings))
        found.append(
            ShmSegment(
                key=key,
                kind=mappings[0].kind,
                name=mappings[0].name,
                configured_bytes=configured,
                touched_bytes=touched,
                counted_bytes=configured if choice == "configured" else touched,
                processes=len(mappings),
            )
        )
    return tuple(sorted(found, key=lambda s: (-s.configured_bytes, s.key)))


def untouched(snap: Snapshot, choice: ShmChoice | None) -> int:
    """What the fixed cost adds beyond the touched pages: each segment's configured size
    less its touched part under "configured"; nothing under "touched" (or None)."""
    if choice != "configured":
        return 0
    return sum(s.counted_bytes - s.touched_bytes for s in segments(snap, choice))


def kept(snap: Snapshot, choice: ShmChoice | None) -> int:
    """What only the conservative answer keeps under "auto": each segment's configured
    size less its touched part; nothing under the other choices (or None)."""
    if choice != "auto":
        return 0
    return sum(s.configured_bytes - s.touched_bytes for s in segments(snap, choice))


def worker_shm(process: ProcessMemory, choice: ShmChoice | None) -> int:
    """A worker's segment pages it alone maps (in its USS), which move to the fixed cost;
    nothing with ``choice`` None (launch mode: an instance's segments are its own)."""
    if choice is None:
        return 0
    return sum(m.private_bytes for m in process.shm)


def summary(snapshots: Sequence[Snapshot], choice: ShmChoice) -> SharedMemory | None:
    """How the fitted samples' segments were counted, or None where none maps one."""
    if not snapshots or not any(p.shm for s in snapshots for p in s.processes):
        return None

    def mean(values: list[int]) -> int:
        return round(statistics.fmean(values)) if values else 0

    return SharedMemory(
        choice=choice,
        segments=segments(snapshots[-1], choice),
        untouched_bytes=mean([untouched(s, choice) for s in snapshots]),
        moved_bytes=mean([sum(worker_shm(w, choice) for w in s.workers) for s in snapshots]),
        kept_bytes=mean([kept(s, choice) for s in snapshots]),
    )
