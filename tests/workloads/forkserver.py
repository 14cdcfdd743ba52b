"""A small pre-forking HTTP server that adds workers on demand, for validation experiments.

Like apache2 prefork, the parent opens one listening socket on loopback and forks workers
that each accept() on it and serve one request per connection (HTTP/1.0, so ``ab`` can load
it). Unlike apache2, it adds exactly one worker whenever it is told to, so an experiment can
grow a running workload one worker at a time until the cgroup's OOM killer fires.

Memory, all of it written so the sizes are real (no zero page, THP declined):

* ``--shared``: a heap the parent writes before forking; workers inherit it copy-on-write
  and write the fraction ``--dirty`` of it (breaking copy-on-write for that part);
* ``--private``: what each worker allocates and writes for itself when it starts;
* ``--shm``: a MAP_SHARED segment the parent writes and every worker reads (shmem);
* ``--mappings``: that many separate one-page mappings the parent writes before forking,
  so each worker inherits that many VMAs: its page tables, vm_area_structs and anon_vma
  chains (kernel memory) cost far more than its own pages;
* per request: ``--scratch`` bytes written and released (transient), and ``--grow`` bytes
  kept, until a worker has kept ``--grow-cap`` (a cache filling up, a slow leak bounded by
  a restart policy).

Protocol. On start it prints ``ready <parent pid> <port> <worker pids...>``. Then it reads
commands on stdin, one per line, and answers on stdout: ``add`` forks one worker and
prints ``added <pid>`` once its memory is in place; ``status`` prints ``status <workers>
<fewest requests served by a worker> <most>``. End of input, SIGTERM or SIGINT stops it
and its workers; workers also die with the parent (PR_SET_PDEATHSIG).

Standard library only, so it runs as a plain script: ``python3 forkserver.py --workers 4``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import mmap
import os
import re
import signal
import socket
import struct
import sys

PAGE = mmap.PAGESIZE
MAX_WORKERS = 8192
COUNTER = struct.Struct("q")
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    number, unit = match.groups()
    return int(float(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()])


def anonymous(size: int, shared: bool = False) -> mmap.mmap | None:
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
    if region is None:
        return 0
    return sum(region[offset] for offset in range(0, len(region), PAGE))


def many_mappings(count: int) -> None:
    """``count`` one-page read-write mappings, each written, separated by PROT_NONE pages so
    that the kernel cannot merge them into one VMA."""
    if count <= 0:
        return
    prot_none, prot_rw = 0, mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    base = _libc.mmap(None, 2 * count * PAGE, prot_none, flags, -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    for index in range(count):
        address = base + 2 * index * PAGE
        if _libc.mprotect(address, PAGE, prot_rw) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        ctypes.memset(address, index % 251 + 1, 1)


class Worker:
    """One worker's life: its memory, then accept() and serve until the parent is gone."""

    def __init__(
        self, args: argparse.Namespace, heap: mmap.mmap | None, shm: mmap.mmap | None
    ) -> None:
        self.args = args
        self.heap = heap
        self.shm = shm
        self.kept: list[bytes] = []
        self.kept_bytes = 0

    def run(self, listener: socket.socket, counters: mmap.mmap, slot: int, ready_fd: int) -> None:
        parent = os.getppid()
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(0)
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        args = self.args
        touch(self.heap, int(args.dirty * args.shared), seed=slot + 7)
        private = anonymous(args.private)
        touch(private, args.private, seed=slot + 13)
        read_all(self.shm)
        os.write(ready_fd, b"x")
        os.close(ready_fd)
        listener.settimeout(1.0)
        served = 0
        while True:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                if os.getppid() != parent:
                    os._exit(0)
                continue
            except OSError:
                continue
            with contextlib.suppress(OSError), connection:
                connection.settimeout(5.0)
                self.serve(connection)
            served += 1
            COUNTER.pack_into(counters, slot * COUNTER.size, served)

    def serve(self, connection: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                break
            request += chunk
        args = self.args
        if args.scratch > 0:
            scratch = anonymous(args.scratch)
            touch(scratch, args.scratch, seed=len(request))
            assert scratch is not None
            scratch.close()
        if args.grow > 0 and self.kept_bytes < args.grow_cap:
            size = min(args.grow, args.grow_cap - self.kept_bytes)
            self.kept.append(bytes([len(self.kept) % 251 + 1]) * size)
            self.kept_bytes += size
        body = b"ok %d\n" % self.kept_bytes
        connection.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shared", type=parse_size, default=0)
    parser.add_argument("--dirty", type=float, default=0.0)
    parser.add_argument("--private", type=parse_size, default=0)
    parser.add_argument("--shm", type=parse_size, default=0)
    parser.add_argument("--mappings", type=int, default=0)
    parser.add_argument("--scratch", type=parse_size, default=0)
    parser.add_argument("--grow", type=parse_size, default=0)
    parser.add_argument("--grow-cap", type=parse_size, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.workers <= MAX_WORKERS or not 0.0 <= args.dirty <= 1.0:
        parser.error(f"--workers must be 0..{MAX_WORKERS} and --dirty between 0 and 1")

    heap = anonymous(args.shared)
    touch(heap, args.shared, seed=1)
    shm = anonymous(args.shm, shared=True)
    touch(shm, args.shm, seed=3)
    many_mappings(args.mappings)
    counters = anonymous(MAX_WORKERS * COUNTER.size, shared=True)
    assert counters is not None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    worker = Worker(args, heap, shm)
    children: dict[int, int] = {}  # live worker pid -> its counter slot
    slots = iter(range(MAX_WORKERS))

    def stop(*_: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def reap() -> None:
        """Forget workers that exited (an OOM kill, say)."""
        while children:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.pop(pid, None)

    def spawn() -> int:
        slot = next(slots, None)
        if slot is None:
            raise SystemExit("too many workers")
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                worker.run(listener, counters, slot, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        children[pid] = slot
        os.read(read_fd, 1)  # empty when the worker died before it was ready
        os.close(read_fd)
        return pid

    first = [spawn() for _ in range(args.workers)]
    port = listener.getsockname()[1]
    print("ready", os.getpid(), port, *first, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "add":
            print("added", spawn(), flush=True)
        elif command == "status":
            reap()
            served = [COUNTER.unpack_from(counters, s * COUNTER.size)[0] for s in children.values()]
            print("status", len(served), min(served, default=0), max(served, default=0), flush=True)
        elif command == "quit":
            break
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
