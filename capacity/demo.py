"""The embedded demo workload: a tiny pre-forking server with known memory sizes.

Run as ``python -m capacity.demo --shared 64M --private 16M --workers 4``. The parent maps
and writes a shared heap of ``--shared`` bytes, then forks ``--workers`` workers. Each worker
inherits the heap copy-on-write, writes ``--dirty`` of it (breaking copy-on-write for that
fraction), and maps and writes ``--private`` bytes of its own. ``--shm`` adds a shared-memory
segment (MAP_SHARED, counted as shmem) that every worker reads.

When every worker is ready, the parent prints one line, ``ready <parent pid> <worker pids>``,
on stdout and then waits. SIGTERM or SIGINT stops the parent and its workers; workers also
exit on their own when the parent disappears, so the demo never outlives capplan.

Server mode (``--port P``) makes the workers serve tiny HTTP requests on 127.0.0.1:P, so a
load generator such as ``ab`` can drive them. Each request makes the worker that serves it
write ``--grow-per-request`` more bytes of the inherited heap, breaking copy-on-write page
by page as a real server's workers do (refcounts, caches, allocator metadata), until it has
written ``--grow-limit`` bytes: copy-on-write drift with a known rate per request and a
known plateau. ``--request-delay`` adds a fixed service time per request, which bounds the
request rate and so the growth rate. With ``--workers 0`` the parent serves the requests
itself and writes ``--private`` itself: a one-process server for launch mode.

Every page is written with a distinct value and transparent huge pages are declined for the
known regions, so the sizes are exact: no zero page, no KSM merging, no 2 MiB rounding.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from capacity.mmaps import PAGE, anonymous, read_all, touch

RESPONSE = (
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    b"Connection: close\r\n\r\nok\n"
)
MAX_REQUEST = 65536


def _parse_size(text: str) -> int:
    # Imported lazily from the package so that the demo can also run as a plain script.
    from capacity.units import parse_size

    return parse_size(text)


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
    private = anonymous(args.private)
    touch(private, args.private, seed=number + 13)
    read_all(shm)
    os.write(ready_fd, b"x")
    os.close(ready_fd)
    if args.listener is not None:
        grower = Grower(heap, int(args.dirty * args.shared), args, seed=number + 29)
        serve(args.listener, grower, args.request_delay, lambda: os.getppid() == parent)
        os._exit(0)
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)


class Grower:
    """Writes the next pages of the inherited heap, ``per_request`` bytes per request, from
    ``start`` on, until ``limit`` bytes are written: copy-on-write drift with a plateau."""

    def __init__(
        self, heap: mmap.mmap | None, start: int, args: argparse.Namespace, seed: int
    ) -> None:
        self.heap = heap
        self.offset = start - start % PAGE
        available = len(heap) - self.offset if heap is not None else 0
        self.end = self.offset + min(args.grow_limit, max(available, 0))
        self.per_request = args.grow_per_request
        self.seed = seed

    def request(self) -> None:
        if self.heap is None or self.per_request <= 0:
            return
        stop = min(self.offset + self.per_request, self.end)
        for index, offset in enumerate(range(self.offset, stop, PAGE)):
            self.heap[offset] = (self.seed + index) % 251 + 1
        self.offset = max(self.offset, stop)


def serve(
    listener: socket.socket,
    grower: Grower,
    delay: float,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Answer HTTP requests one at a time until ``alive()`` turns false (parent gone)."""
    listener.settimeout(0.2)
    while alive is None or alive():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        with conn:
            conn.settimeout(5.0)
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue  # a bare connect (a readiness probe) is not a request
                grower.request()
                if delay > 0:
                    time.sleep(delay)
                conn.sendall(RESPONSE)


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
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="serve tiny HTTP requests on 127.0.0.1:PORT (server mode)",
    )
    parser.add_argument(
        "--grow-per-request",
        type=_parse_size,
        default=0,
        help="server mode: inherited heap bytes a worker writes per request it serves",
    )
    parser.add_argument(
        "--grow-limit",
        type=_parse_size,
        default=None,
        help="server mode: stop growing after this many bytes per worker (default: the heap)",
    )
    parser.add_argument(
        "--request-delay",
        type=float,
        default=0.0,
        help="server mode: seconds each request takes (bounds the request rate)",
    )
    args = parser.parse_args(argv)
    if args.workers < 0 or not 0.0 <= args.dirty <= 1.0:
        parser.error("--workers must be >= 0 and --dirty between 0 and 1")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    if args.grow_limit is None:
        args.grow_limit = args.shared
    args.listener = None
    if args.port is not None:
        args.listener = socket.create_server(("127.0.0.1", args.port), backlog=128)

    heap = anonymous(args.shared)
    touch(heap, args.shared, seed=1)
    shm = anonymous(args.shm, shared=True)
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
    if args.listener is not None and args.workers == 0:
        # One-process server: the parent holds the private memory and serves itself.
        private = anonymous(args.private)
        touch(private, args.private, seed=13)
        os.write(1, f"ready {os.getpid()}\n".encode())
        serve(args.listener, Grower(heap, args.shared, args, seed=29), args.request_delay)
        return 0
    os.write(1, ("ready " + " ".join(map(str, [os.getpid(), *children])) + "\n").encode())
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
