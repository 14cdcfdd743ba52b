"""What the live server tests share: skipping when a server is not installed, and what a
server's own cgroup holds besides page cache (the truth a per-worker cost is held to)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

from capacity.measure.cgroup import OwnCgroup
from capacity.testing import servers


def need(*checks: Callable[[], object]) -> None:
    """Skip, naming the missing package, when a server or tool is not installed."""
    for check in checks:
        try:
            check()
        except servers.ServerUnavailable as missing:
            pytest.skip(str(missing))


def footprint(cgroup: OwnCgroup, readings: int = 5) -> float:
    """Median of what the cgroup holds besides page cache: usage - cache + shmem."""
    values = []
    for _ in range(readings):
        memory = cgroup.memory()
        assert memory is not None
        values.append(
            memory.current_bytes - memory.stat.get("file", 0) + memory.stat.get("shmem", 0)
        )
        time.sleep(0.2)
    return statistics.median(values)
