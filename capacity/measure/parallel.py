"""Read many processes on a few threads: the kernel's page-table walks run in parallel.

Most of a sample's time is the kernel walking each process's page tables to produce
``smaps_rollup`` (about 140 µs for a 30 MiB worker on the reference host, issue 7), and
``os.read`` releases the GIL while it does. Reading the workload on two threads lets two
walks run at once on a host with an idle core: the sample takes about half as long, and
its processes are read closer together in time, so the snapshot is more nearly one
instant. Each process is still read by one thread at a time, so no process waits longer
for its own mmap lock than before; the CPU spent is the same or slightly more (the
threads' hand-offs). Small processes gain nothing (their reads are mostly Python, which
the GIL serialises), and neither does a host whose cores are busy.

``map_ordered`` keeps the callers' semantics: results in item order, and the exception of
the earliest failing item raised in the caller's thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Fewer items than this per thread are not worth a thread's start-up (~0.1 ms).
MIN_ITEMS_PER_THREAD = 32


def default_threads() -> int:
    """Two readers where the host has two CPUs to give them; one otherwise."""
    return min(2, os.cpu_count() or 1)


def map_ordered(function: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """``[function(item) for item in items]``, spread over up to ``threads`` threads.

    The calling thread takes every ``threads``-th item from the first, the helpers the
    others. When an item raises, its thread stops, the other threads are told to stop, and
    once they have, the exception of the earliest failing item is raised here. An
    exception in the calling thread (Ctrl-C arrives there) is raised at once: the helpers
    are daemon threads that stop at their next item.
    """
    count = len(items)
    threads = min(threads, count // MIN_ITEMS_PER_THREAD)
    if threads <= 1:
        return [function(item) for item in items]
    results: list[R | None] = [None] * count
    errors: dict[int, BaseException] = {}
    stop = threading.Event()

    def work(first: int) -> None:
        for index in range(first, count, threads):
            if stop.is_set():
                return
            try:
                results[index] = function(items[index])
            except BaseException as err:  # re-raised in the caller's thread
                errors[index] = err
                stop.set()
                return

    helpers = [
        threading.Thread(target=work, args=(first,), name=f"capplan-reader-{first}", daemon=True)
        for first in range(1, threads)
    ]
    for helper in helpers:
        helper.start()
    try:
        for index in range(0, count, threads):
            if stop.is_set():
                break
            results[index] = function(items[index])
    except BaseException:
        stop.set()
        raise
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[min(errors)]
    return results  # type: ignore[return-value]  # every slot was filled
