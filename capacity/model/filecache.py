"""The workload's page cache, hot and cold (issue 14): pure, records in, records out.

The kernel keeps file pages on two LRU lists. A page enters the inactive list on its first
access and moves to the active list on its second while still resident (mm/swap.c,
``folio_mark_accessed``); reclaim takes pages from the inactive list first. When an evicted
page is read again, mm/workingset.c compares its refault distance (how many pages were
evicted while it was out) with the size of the working set: a page that would have stayed
resident with that much more memory is a refault into the active list
(``workingset_refault_file``; ``workingset_activate_file`` counts those activated,
Documentation/admin-guide/cgroup-v2.rst, memory.stat). So:

* **hot** (needed: taking it costs refaults, stalls and disk reads) is the active list, plus
  the part of the inactive list the workload needed again while capplan sampled: each page
  refaulted between the first and the last sample (cgroup), or each page cachestat reports
  recently evicted (files: a shadow entry young enough to refault into the active list),
  up to the size of the inactive list;
* **cold** (reclaimable without harm) is the rest of the inactive list: read once and not
  needed since.

Two sources, by preference: the workload's own memory cgroup (``active_file`` and
``inactive_file`` of the last sample, v1's ``total_*``; refaults from the first and last),
else the per-file probe (``measure/filecache``), whose active part comes from each cached
page's flags. Where the flags could not be read (not root), every cached byte of the probed
files counts as hot: the conservative answer must stay safe.

**What the answers keep.** The point answer keeps none of it: the kernel reclaims page cache,
hot or not, before it OOM-kills, so the OOM limit (what the point predicts) does not
include it. The conservative answer keeps the hot part resident (``ModelFit.hot_cache_bytes``)
beyond the mapped file pages paid once it keeps already (``Breakdown.fixed_file_bytes``,
in ``reclaimable_bytes``): the active list holds those too, so they are not kept twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from capacity.cache_records import FileCache, FileProbe
from capacity.records import Breakdown, CgroupMemory, Snapshot

CGROUP_RULE = (
    "hot = the cgroup's active_file + the inactive file pages refaulted while sampling "
    "(workingset_refault_file); cold = the rest of inactive_file"
)
FILES_RULE = (
    "hot = per file, cached pages on the active list (page flags) + recently evicted pages "
    "(cachestat), up to its inactive part, and all of a file whose flags were not read; "
    "cold = the rest of the cached pages"
)
UNKNOWN_RULE = "hot = every cached page of the probed files (their page flags were not read)"


def _own_cgroups(snapshots: Sequence[Snapshot]) -> list[tuple[Snapshot, CgroupMemory]]:
    found = []
    for snapshot in snapshots:
        cgroup = snapshot.cgroup
        if cgroup is not None and cgroup.own and "active_file" in cgroup.stat:
            found.append((snapshot, cgroup))
    return found


def has_own_cgroup(snapshots: Sequence[Snapshot]) -> bool:
    """True when the last sample's cgroup holds only the workload and shows its file LRU
    lists: then the cgroup is the reading, and no file needs probing."""
    return bool(snapshots) and bool(_own_cgroups(snapshots[-1:]))


def split(active: int, inactive: int, needed_again: int) -> tuple[int, int]:
    """(hot, cold) of an LRU split: the active part, plus as much of the inactive part as
    was needed again (refaulted or recently evicted)."""
    again = min(max(needed_again, 0), inactive)
    return active + again, inactive - again


def from_cgroup(snapshots: Sequence[Snapshot], page_size: int) -> FileCache | None:
    """The cgroup reading: LRU lists of the last sample, refault rates over the samples."""
    own = _own_cgroups(snapshots)
    if not own or own[-1][0] is not snapshots[-1]:
        return None
    (first, first_group), (last, last_group) = own[0], own[-1]
    stat = last_group.stat
    active, inactive = stat.get("active_file", 0), stat.get("inactive_file", 0)
    window = last.taken_at - first.taken_at
    refaulted: int | None = None
    refaults_rate: float | None = None
    activations_rate: float | None = None
    if window > 0 and "workingset_refault_file" in stat:
        refaults = stat["workingset_refault_file"] - first_group.stat.get(
            "workingset_refault_file", stat["workingset_refault_file"]
        )
        refaulted = max(refaults, 0) * page_size
        refaults_rate = max(refaults, 0) / window
    if window > 0 and "workingset_activate_file" in stat:
        activations = stat["workingset_activate_file"] - first_group.stat.get(
            "workingset_activate_file", stat["workingset_activate_file"]
        )
        activations_rate = max(activations, 0) / window
    hot, cold = split(active, inactive, refaulted or 0)
    note = ""
    if refaulted is None:
        note = (
            "one sample, or a kernel without workingset_refault_file in this cgroup's "
            "memory.stat: no refault rate"
        )
    return FileCache(
        source="cgroup",
        hotness="cgroup",
        cached_bytes=active + inactive,
        hot_bytes=hot,
        cold_bytes=cold,
        rule=CGROUP_RULE,
        active_bytes=active,
        inactive_bytes=inactive,
        mapped_bytes=stat.get("file_mapped"),
        refaults_per_second=refaults_rate,
        activations_per_second=activations_rate,
        refaulted_bytes=refaulted,
        window_seconds=max(window, 0.0),
        cgroup=last_group.path,
        note=note,
    )


def from_files(probe: FileProbe) -> FileCache:
    """The per-file reading: each probed file's cached, active and recently evicted pages."""
    cached = sum(f.cached_bytes for f in probe.files)
    mapped = sum(f.cached_bytes for f in probe.files if f.mapped)
    evicted = [f.recently_evicted_bytes for f in probe.files]
    recently = sum(e for e in evicted if e is not None) if evicted else None
    if evicted and any(e is None for e in evicted):
        recently = None  # mincore: residency only
    if probe.hotness == "kpageflags":
        # File by file: a file without flags (the probe's cap, a helper lost on it) is hot.
        hot = active = inactive = 0
        for found in probe.files:
            if found.active_bytes is None:
                hot += found.cached_bytes
                continue
            again = found.recently_evicted_bytes or 0
            rest = found.cached_bytes - found.active_bytes
            hot += split(found.active_bytes, rest, again)[0]
            active, inactive = active + found.active_bytes, inactive + rest
        cold = cached - hot
        return FileCache(
            source="files",
            hotness="kpageflags",
            cached_bytes=cached,
            hot_bytes=hot,
            cold_bytes=cold,
            rule=FILES_RULE,
            active_bytes=active,
            inactive_bytes=inactive,
            mapped_bytes=mapped,
            recently_evicted_bytes=recently,
            probe=probe,
            note=probe.note,
        )
    return FileCache(
        source="files",
        hotness="unknown",
        cached_bytes=cached,
        hot_bytes=cached,
        cold_bytes=0,
        rule=UNKNOWN_RULE,
        mapped_bytes=mapped,
        recently_evicted_bytes=recently,
        probe=probe,
        note=probe.note,
    )


def classify(
    snapshots: Sequence[Snapshot], probe: FileProbe | None, page_size: int
) -> FileCache | None:
    """The cgroup reading where the workload has a cgroup of its own, else the probe's."""
    found = from_cgroup(snapshots, page_size)
    if found is not None:
        return found
    return from_files(probe) if probe is not None else None


def with_kept(cache: FileCache, breakdown: Breakdown | None) -> FileCache:
    """The cache with ``kept_bytes``: its hot part beyond the mapped file pages paid once
    that the conservative answer keeps already."""
    already = breakdown.fixed_file_bytes if breakdown is not None else 0
    return dataclasses.replace(cache, kept_bytes=max(0, cache.hot_bytes - already))
