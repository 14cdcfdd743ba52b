"""Gentle on the workload: which processes the deep readers may walk without ``--deep``.

Every smaps-family read walks the process's page tables with the process's mmap lock held
for reading. ``smaps_rollup`` and ``smaps`` hold it across the walk of a whole mapping
(``smaps_rollup`` lets a waiting writer in between mappings since Linux 5.10, commit
ff9f47f6f00c); ``pagemap`` takes it per 2 MiB of address space. While it is held the
process cannot mmap, munmap or grow its heap, and on kernels without per-VMA locks (before
6.4) its page faults queue behind the waiting writer: the whole process stalls.
process-exporter #246 measured 4.4 s on a 200 GB process; DataDog agent #41946 reports
tens of seconds on ~2 TB heaps. ``benchmarks/measurement_cost.py`` measures it on the
reference host (reports/performance.md): on a process with one 4 GiB mapping, a thread of
that process waited in ``mmap()`` for as long as the reader ran: 20 ms for
``smaps_rollup``, 25 ms for per-mapping ``smaps``, and 3 ms during a 53 ms ``pagemap``
walk.

capplan reads ``smaps_rollup`` once per sample: the least any PSS/USS figure costs. The
deep readers add to it, and grow with the process:

* per-mapping ``smaps`` (``capplan inspect``) walks the page tables again, with the same
  stall, and formats and parses every mapping: 0.26 s for a process of 20,000 mappings;
* the exact tier reads ``pagemap``, 8 bytes per virtual page, and holds about 100 bytes of
  capplan's own memory per resident page (481 MiB peak for 2,000 workers of 10 MiB).

So they run on processes up to a threshold only, unless the user passes ``--deep``:

* more than ``DEEP_RSS_BYTES`` (4 GiB) resident: a smaps walk of a larger process stalls
  it for longer than the ~20 ms measured per 4 GiB (about 20 ns per page: a second at
  200 GB), and the exact tier would hold over 100 MiB per process;
* more than ``DEEP_MAPPINGS`` (10,000) mappings: per-mapping smaps is then megabytes of
  text (a JVM or Elasticsearch with many mapped files), read and parsed in a tenth of a
  second or more.

Both figures come from the default read (``Rss`` of ``smaps_rollup`` every sample; the
mapping count from ``maps``, which takes no page-table walk), so deciding costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from capacity.errors import CapplanError
from capacity.records import ExactFallback, FallbackCause, ProcessMemory
from capacity.units import format_bytes

DEEP_RSS_BYTES = 4 * 1024**3
DEEP_MAPPINGS = 10_000


def too_large(
    processes: Iterable[ProcessMemory],
    rss_limit: int | None = None,
    mapping_limit: int | None = None,
) -> list[ProcessMemory]:
    """The processes over either threshold (default: the module's), largest first."""
    rss_limit = DEEP_RSS_BYTES if rss_limit is None else rss_limit
    mapping_limit = DEEP_MAPPINGS if mapping_limit is None else mapping_limit
    large = [
        p for p in processes if p.rollup.rss_bytes > rss_limit or (p.mappings or 0) > mapping_limit
    ]
    return sorted(large, key=lambda p: (-p.rollup.rss_bytes, -(p.mappings or 0), p.pid))


def refusal(large: Sequence[ProcessMemory]) -> str:
    """Why the deep readers skipped the workload, naming its largest processes."""
    shown = ", ".join(
        f"pid {p.pid} ({p.name}) {format_bytes(p.rollup.rss_bytes)} resident in "
        f"{p.mappings or 0:,} mappings"
        for p in large[:3]
    )
    more = f" and {len(large) - 3} more" if len(large) > 3 else ""
    return (
        f"too large for a page walk without --deep: {shown}{more} (over {format_bytes(DEEP_RSS_BYTES)} resident or "
        f"{DEEP_MAPPINGS:,} mappings: each walk holds the process's memory-map lock)"
    )


def refused(large: Sequence[ProcessMemory], command: str) -> ExactFallback:
    """The deep readers refused the workload: a fallback (or, under ``--method exact``, an
    error) whose hint is ``--deep`` rather than "run as root"."""
    return ExactFallback(
        cause=FallbackCause.TOO_LARGE, reason=refusal(large), hint=deep_hint(command)
    )


def refuse_mappings(large: Sequence[ProcessMemory], command: str) -> CapplanError:
    """The error for a per-mapping read (``capplan inspect``) the thresholds forbid.

    There is nothing cheaper to fall back to: the rollup has no per-mapping figures.
    """
    return CapplanError(
        f"{refusal(large)}; capplan inspect reads every mapping of every process",
        hint=f"pass --deep to read them anyway ({command} --deep), at the cost of stalling "
        "them briefly, or use capplan estimate, which reads smaps_rollup only",
    )


def deep_hint(command: str) -> str:
    """What to run next after a refusal."""
    return (
        f"pass --deep to walk them anyway ({command} --deep), at the cost of stalling them "
        "briefly, or --method smaps to choose smaps and silence this"
    )
