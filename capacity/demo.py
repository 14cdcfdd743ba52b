"""The embedded demo workload: a tiny pre-forking server with known memory sizes.

Run as ``python -m capacity.demo --shared 64M --private 16M --workers 4``. The parent maps
and writes a shared heap of ``--shared`` bytes, then forks ``--workers`` workers. Each worker
inherits the heap copy-on-write, writes ``--dirty`` of it (breaking copy-on-write for that
fraction), and maps and writes ``--private`` bytes of its own. ``--shm`` adds a shared-memory
segment (MAP_SHARED, counted as shmem) that every worker reads.

When every worker is ready, the parent prints one line, ``ready <parent pid> <worker pids>``,
on stdout and then waits. SIGTERM or SIGINT stops the parent and its workers; workers also
exit on their own when the parent disappears, so the demo never outlives capplan.

Every page is written with a distinct value and transparent huge pages are declined for the
known regions, so the sizes are exact: no zero page, no KSM merging, no 2 MiB rounding.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import signal
import sys
import time

PAGE = mmap.PAGESIZE


def _parse_size(text: str) -> int:
    # Imported lazily from the package so that the demo can also run as a plain script.
    from capacity.units import parse_size

    return parse_size(text)


def _anonymous(size: int, shared: bool = False) -> mmap.mmap | None:
    if size <= 0:
        return None
    flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | mmap.MAP_ANONYMOUS
    region = mmap.mmap(-1, size, flags=flags)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    return region


def touch(region: mmap.mmap | None, size: int, seed: int) -> None:
    """Write one distinct byte in every page of the first ``size`` bytes."""
    if region is None:
        return
    for index, offset in enumerate(range(0, min(size, len(region)), PAGE)):
        region[offset] = (seed + index) % 251 + 1


def read_all(region: mmap.mmap | None) -> int:
    """Read one byte per page, so the pages are mapped in this process too."""
    if region is None:
        return 0
    return sum(region[offset] for offset in range(0, len(region), PAGE))


def _worker(
    args: argparse.Namespace,
    heap: mmap.mmap | None,
    shm: mmap.mmap | None,
    ready_fd: int,
    number: int,
) -> None:
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    touch(heap, int(args.dirty * args.shared), seed=number + 7)
    private = _anonymous(args.private)
    touch(private, args.private, seed=number + 13)
    read_all(shm)
    os.write(ready_fd, b"x")
    os.close(ready_fd)
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capacity.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--shared",
        type=_parse_size,
        default=_parse_size("64M"),
        help="shared heap written by the parent before fork",
    )
    parser.add_argument(
        "--private",
        type=_parse_size,
        default=_parse_size("16M"),
        help="private memory each worker writes",
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--dirty", type=float, default=0.0, help="fraction of the shared heap each worker writes"
    )
    parser.add_argument(
        "--shm", type=_parse_size, default=0, help="MAP_SHARED segment all workers read"
    )
    args = parser.parse_args(argv)
    if args.workers < 0 or not 0.0 <= args.dirty <= 1.0:
        parser.error("--workers must be >= 0 and --dirty between 0 and 1")

    heap = _anonymous(args.shared)
    touch(heap, args.shared, seed=1)
    shm = _anonymous(args.shm, shared=True)
    touch(shm, args.shm, seed=3)

    read_fd, write_fd = os.pipe()
    children: list[int] = []

    def stop(*_: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for number in range(args.workers):
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _worker(args, heap, shm, write_fd, number)
        children.append(pid)
    os.close(write_fd)
    got = 0
    while got < args.workers:
        chunk = os.read(read_fd, 64)
        if not chunk:
            break
        got += len(chunk)
    os.close(read_fd)
    os.write(1, ("ready " + " ".join(map(str, [os.getpid(), *children])) + "\n").encode())
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
