"""A small pre-forking workload with known memory, for the tests, validation and benchmarks.

One program, two modes; run it by path with any ``python3``:

    python3 capacity/testing/forkserver.py --workers 4 --shared 64M --private 256K
    python3 capacity/testing/forkserver.py --idle --workers 500 --shared 4M --private 1M

**Server mode** (the default; ``scripts/validate.py`` and the live tests). Like apache2
prefork, the parent opens one listening socket on loopback and forks workers that each
accept() on it and serve one request per connection (HTTP/1.0, so ``ab`` can load it).
Unlike apache2, it adds exactly one worker whenever it is told to, so an experiment can grow
a running workload one worker at a time until the cgroup's OOM killer fires.

Memory, all of it written so the sizes are real (no zero page, THP declined):

* ``--shared``: a heap the parent writes before forking; workers inherit it copy-on-write
  and write the fraction ``--dirty`` of it (breaking copy-on-write for that part);
* ``--private``: what each worker allocates and writes for itself when it starts;
* ``--shm``: a MAP_SHARED segment the parent writes and every worker reads (shmem);
* ``--mappings``: that many separate one-page mappings the parent writes before forking,
  so each worker inherits that many VMAs: its page tables, vm_area_structs and anon_vma
  chains (kernel memory) cost far more than its own pages;
* ``--thp``: the heap and the private memory are left to the kernel's transparent huge
  page mode instead of declining it: under ``always`` the parent's heap is in huge pages
  that the workers' writes after fork break copy-on-write in (the kernel splits the huge
  mapping and copies 4 KiB pages, since 5.8), and each worker's private memory faults in
  as huge pages; under ``madvise`` the same workload has none;
* per request: ``--scratch`` bytes written and released (transient), and ``--grow`` bytes
  kept, until a worker has kept ``--grow-cap`` (a cache filling up, a slow leak bounded by
  a restart policy).

Protocol. On start it prints ``ready <parent pid> <port> <worker pids...>``. Then it reads
commands on stdin, one per line, and answers on stdout: ``add`` forks one worker and
prints ``added <pid>`` once its memory is in place; ``status`` prints ``status <workers>
<fewest requests served by a worker> <most>``. End of input, SIGTERM or SIGINT stops it
and its workers; workers also die with the parent (PR_SET_PDEATHSIG).

**Idle mode** (``--idle``; ``benchmarks/``): N idle workers, known memory, no CPU. The parent
maps and writes ``--shared`` bytes, then forks ``--workers`` workers. Each worker maps and
writes ``--private`` bytes of its own, says it is ready, and then blocks in ``read()`` on a
pipe whose write end only the parent holds. It uses no CPU while it waits (unlike
``capacity.demo``, whose workers poll their parent five times a second, which at 2,000
workers is 10,000 wake-ups a second on the host being measured), and it exits as soon as
the parent is gone, because the read then returns end-of-file: nothing outlives the parent,
even after SIGKILL. ``--tag`` is ignored; it only makes the command line unique, so that
``smem -P TAG`` selects this workload and nothing else on a shared host. When every worker
is ready the parent prints ``ready <parent pid> <worker pids...>`` and waits for a signal.
Idle mode imports nothing beyond ``os``, ``signal``, ``sys`` and ``mmap`` (the server
mode's argparse, ctypes and socket are imported only in server mode), so each idle worker is
a forked copy of a nearly bare Python interpreter.

Standard library only, and nothing from ``capacity``: the mmap helpers are
``capacity/mmaps.py`` (shared with ``capacity.demo``), loaded here by its file path.
"""

from __future__ import annotations

import os
import signal
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    import mmap
    import socket


def _load_mmaps() -> ModuleType:
    """``capacity/mmaps.py`` by its path: this file runs as a script, not as a module."""
    path = Path(__file__).resolve().parent.parent / "mmaps.py"
    loader = SourceFileLoader("capplan_mmaps", str(path))
    module = ModuleType(loader.name)
    module.__file__ = str(path)
    loader.exec_module(module)
    return module


mmaps: Any = _load_mmaps()
PAGE: int = mmaps.PAGE
MAX_WORKERS = 8192
COUNTER_SIZE = 8  # one signed 64-bit count of requests served per worker slot
PR_SET_PDEATHSIG = 1
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``64M``, ``256K``, ``1.5G``, ``4MiB``, ``512kb``, ``4096``: a size in bytes."""
    value = text.strip().lower()
    for suffix in ("ib", "b"):
        if value.endswith(suffix) and value[: -len(suffix)][-1:] in ("k", "m", "g"):
            value = value[: -len(suffix)]
            break
    unit = value[-1:] if value[-1:] in ("k", "m", "g") else ""
    number = value[: len(value) - len(unit)].strip()
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"bad size {text!r}") from None
    if amount < 0 or not number[:1].isdigit():
        raise ValueError(f"bad size {text!r}")
    return int(amount * UNITS[unit])


# --------------------------------------------------------------------------- idle mode


def idle_main(argv: list[str]) -> int:
    options = {"--workers": "4", "--shared": "4M", "--private": "1M", "--tag": ""}
    for name, value in zip(argv[::2], argv[1::2], strict=False):
        if name not in options:
            print(f"unknown option {name}", file=sys.stderr)
            return 2
        options[name] = value
    workers = int(options["--workers"])
    private = parse_size(options["--private"])
    heap = mmaps.touched(parse_size(options["--shared"]), seed=1)  # noqa: F841

    life_read, life_write = os.pipe()  # workers block on this; EOF when the parent is gone
    ready_read, ready_write = os.pipe()
    children = []
    for number in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(life_write)
            os.close(ready_read)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            mine = mmaps.touched(private, seed=number + 13)  # noqa: F841
            os.write(ready_write, b"x")
            os.close(ready_write)
            while os.read(life_read, 1):
                pass
            os._exit(0)
        children.append(pid)
    os.close(ready_write)
    os.close(life_read)
    got = 0
    while got < workers:
        chunk = os.read(ready_read, 4096)
        if not chunk:
            break
        got += len(chunk)
    os.close(ready_read)
    os.write(1, ("ready " + " ".join(map(str, [os.getpid(), *children])) + "\n").encode())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        signal.pause()


# --------------------------------------------------------------------------- server mode


class Libc:
    """The three libc calls the server mode needs (ctypes imported only here)."""

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        self.ctypes = ctypes
        self.lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.lib.mmap.restype = ctypes.c_void_p
        self.lib.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        self.lib.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def die_with_parent(self) -> None:
        self.lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def many_mappings(self, count: int) -> None:
        """``count`` one-page read-write mappings, each written, separated by PROT_NONE
        pages so that the kernel cannot merge them into one VMA."""
        import mmap

        if count <= 0:
            return
        ctypes = self.ctypes
        prot_none, prot_rw = 0, mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        base = self.lib.mmap(None, 2 * count * PAGE, prot_none, flags, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        for index in range(count):
            address = base + 2 * index * PAGE
            if self.lib.mprotect(address, PAGE, prot_rw) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
            ctypes.memset(address, index % 251 + 1, 1)


class Worker:
    """One worker's life: its memory, then accept() and serve until the parent is gone."""

    def __init__(
        self,
        args: argparse.Namespace,
        heap: mmap.mmap | None,
        shm: mmap.mmap | None,
        libc: Libc,
    ) -> None:
        self.args = args
        self.heap = heap
        self.shm = shm
        self.libc = libc
        self.kept: list[bytes] = []
        self.kept_bytes = 0

    def run(self, listener: socket.socket, counters: mmap.mmap, slot: int, ready_fd: int) -> None:
        import contextlib

        parent = os.getppid()
        self.libc.die_with_parent()
        if os.getppid() != parent:
            os._exit(0)
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        args = self.args
        mmaps.touch(self.heap, int(args.dirty * args.shared), seed=slot + 7)
        private = mmaps.touched(args.private, seed=slot + 13, thp=args.thp)  # noqa: F841
        mmaps.read_all(self.shm)
        os.write(ready_fd, b"x")
        os.close(ready_fd)
        listener.settimeout(1.0)
        served = 0
        at = slot * COUNTER_SIZE
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
            counters[at : at + COUNTER_SIZE] = served.to_bytes(COUNTER_SIZE, "little", signed=True)

    def serve(self, connection: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                break
            request += chunk
        args = self.args
        if args.scratch > 0:
            scratch = mmaps.touched(args.scratch, seed=len(request))
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


def server_main(argv: list[str]) -> int:
    import argparse
    import contextlib
    import socket

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
    parser.add_argument("--thp", action="store_true")
    args = parser.parse_args(argv)
    if not 0 <= args.workers <= MAX_WORKERS or not 0.0 <= args.dirty <= 1.0:
        parser.error(f"--workers must be 0..{MAX_WORKERS} and --dirty between 0 and 1")

    libc = Libc()
    heap = mmaps.touched(args.shared, seed=1, thp=args.thp)
    shm = mmaps.touched(args.shm, seed=3, shared=True)
    libc.many_mappings(args.mappings)
    counters = mmaps.anonymous(MAX_WORKERS * COUNTER_SIZE, shared=True)
    assert counters is not None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    worker = Worker(args, heap, shm, libc)
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

    def served(slot: int) -> int:
        at = slot * COUNTER_SIZE
        return int.from_bytes(counters[at : at + COUNTER_SIZE], "little", signed=True)

    first = [spawn() for _ in range(args.workers)]
    port = listener.getsockname()[1]
    print("ready", os.getpid(), port, *first, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "add":
            print("added", spawn(), flush=True)
        elif command == "status":
            reap()
            counts = [served(s) for s in children.values()]
            print("status", len(counts), min(counts, default=0), max(counts, default=0), flush=True)
        elif command == "quit":
            break
    stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if "--idle" in arguments:
        return idle_main([a for a in arguments if a != "--idle"])
    return server_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
