"""A light pre-forking workload for the benchmarks: N idle workers, known memory, no CPU.

    python3 benchmarks/forkserver.py --workers 500 --shared 4M --private 1M --tag NAME

The parent maps and writes ``--shared`` bytes, then forks ``--workers`` workers. Each
worker maps and writes ``--private`` bytes of its own, says it is ready, and then blocks
in ``read()`` on a pipe whose write end only the parent holds. It uses no CPU while it
waits (unlike ``capacity.demo``, whose workers poll their parent five times a second, which
at 2,000 workers is 10,000 wake-ups a second on the host being measured), and it exits as
soon as the parent is gone, because the read then returns end-of-file: nothing outlives
the parent, even after SIGKILL.

``--tag`` is ignored by the program; it only makes the command line unique, so that
``smem -P TAG`` selects this workload and nothing else on a shared host.

When every worker is ready the parent prints ``ready <parent pid> <worker pids...>`` and
waits for a signal. It imports nothing but the standard library's ``os``, ``mmap`` and
``signal``, so each worker is a forked copy of a bare Python interpreter.
"""

from __future__ import annotations

import mmap
import os
import signal
import sys

PAGE = mmap.PAGESIZE


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number = text.rstrip("KMGkmg")
    return int(number) * units[text[len(number) :].upper()]


def touched(size: int, shared: bool, seed: int) -> mmap.mmap | None:
    """An anonymous region with one distinct byte written in every page (no zero page)."""
    if size <= 0:
        return None
    flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | mmap.MAP_ANONYMOUS
    region = mmap.mmap(-1, size, flags=flags)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    for index, offset in enumerate(range(0, size, PAGE)):
        region[offset] = (seed + index) % 251 + 1
    return region


def main(argv: list[str]) -> int:
    options = {"--workers": "4", "--shared": "4M", "--private": "1M", "--tag": ""}
    for name, value in zip(argv[::2], argv[1::2], strict=False):
        if name not in options:
            print(f"unknown option {name}", file=sys.stderr)
            return 2
        options[name] = value
    workers = int(options["--workers"])
    private = parse_size(options["--private"])
    heap = touched(parse_size(options["--shared"]), shared=False, seed=1)  # noqa: F841

    life_read, life_write = os.pipe()  # workers block on this; EOF when the parent is gone
    ready_read, ready_write = os.pipe()
    children = []
    for number in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(life_write)
            os.close(ready_read)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            mine = touched(private, shared=False, seed=number + 13)  # noqa: F841
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
