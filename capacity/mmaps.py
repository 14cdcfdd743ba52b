"""Anonymous memory of a known size: the demo's and the fork server's shared helpers.

Standard library only (``mmap``), and it imports nothing from ``capacity``: it sits at the
bottom so that ``capacity.demo`` (also bottom) may import it, and
``capacity/testing/forkserver.py``, a program run by path with any ``python3``, loads this
file by its path rather than as ``capacity.mmaps`` (which would need the package on
``sys.path``). One copy of the helpers, then, for every workload whose sizes must be exact.

Every page is written with a distinct value (no zero page, no KSM merging) and transparent
huge pages are declined unless asked (``thp``), so a region of N bytes costs exactly N bytes
of anonymous memory.
"""

from __future__ import annotations

import mmap

PAGE = mmap.PAGESIZE


def anonymous(size: int, shared: bool = False, thp: bool = False) -> mmap.mmap | None:
    """An anonymous mapping of ``size`` bytes (MAP_SHARED if ``shared``); None for a size of
    zero.

    Transparent huge pages are declined (MADV_NOHUGEPAGE) unless ``thp``: then the mapping
    is left to the kernel's mode, neither declined nor asked for, so that under ``always``
    it gets huge pages and under ``madvise`` it does not (the THP validation compares the
    two on the same workload).
    """
    if size <= 0:
        return None
    flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | mmap.MAP_ANONYMOUS
    region = mmap.mmap(-1, size, flags=flags)
    if not thp and hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    return region


def touch(region: mmap.mmap | None, size: int, seed: int) -> None:
    """Write one distinct byte in every page of the first ``size`` bytes."""
    if region is None:
        return
    for index, offset in enumerate(range(0, min(size, len(region)), PAGE)):
        region[offset] = (seed + index) % 251 + 1


def touched(size: int, seed: int, shared: bool = False, thp: bool = False) -> mmap.mmap | None:
    """``anonymous(size, shared, thp)`` with every page written."""
    region = anonymous(size, shared, thp)
    touch(region, size, seed)
    return region


def read_all(region: mmap.mmap | None) -> int:
    """Read one byte per page, so the pages are mapped in this process too."""
    if region is None:
        return 0
    return sum(region[offset] for offset in range(0, len(region), PAGE))
