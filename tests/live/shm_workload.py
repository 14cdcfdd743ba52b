"""A pre-forking workload with one shared memory segment of each kind, partly touched.

Run by tests/live/test_shmem_live.py as ``python shm_workload.py``: the parent maps a shared
anonymous mapping (64 MiB, 16 MiB touched), a POSIX shm file in /dev/shm (32 MiB, 8 MiB
touched), a SysV segment (16 MiB, 4 MiB touched) and a memfd (8 MiB, 2 MiB touched), forks
3 workers that each write 4 MiB of their own and touch 1 MiB more of the shared anonymous
mapping alone, then prints ``ready PARENT W1 W2 W3`` and every process sleeps. The names in
/dev/shm and the SysV id are removed as soon as they are mapped, so nothing outlives the
process group the test kills. Standard library only (ctypes for shmget/shmat).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import sys
import time

MiB = 1024 * 1024
PAGE = mmap.PAGESIZE
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0


def touch(view: memoryview | mmap.mmap, start: int, size: int, seed: int) -> None:
    for index, offset in enumerate(range(start, start + size, PAGE)):
        view[offset] = (seed + index) % 251 + 1


def main() -> None:
    anonymous = mmap.mmap(-1, 64 * MiB, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    touch(anonymous, 0, 16 * MiB, 1)

    name = f"/dev/shm/capplan-test-{os.getpid()}"
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 32 * MiB)
    posix = mmap.mmap(fd, 32 * MiB, flags=mmap.MAP_SHARED)
    os.close(fd)
    touch(posix, 0, 8 * MiB, 2)

    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
    shmid = libc.shmget(IPC_PRIVATE, ctypes.c_size_t(16 * MiB), IPC_CREAT | 0o600)
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget")
    address = libc.shmat(shmid, None, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "shmat")
    libc.shmctl(shmid, IPC_RMID, None)  # removed once the last process detaches
    sysv = (ctypes.c_char * (16 * MiB)).from_address(address)
    for index, offset in enumerate(range(0, 4 * MiB, PAGE)):
        sysv[offset] = bytes([(3 + index) % 251 + 1])

    memfd = os.memfd_create("capplan-test")
    os.ftruncate(memfd, 8 * MiB)
    memory = mmap.mmap(memfd, 8 * MiB, flags=mmap.MAP_SHARED)
    os.close(memfd)
    touch(memory, 0, 2 * MiB, 4)
    os.unlink(name)

    workers = []
    for number in range(3):
        pid = os.fork()
        if pid == 0:
            own = mmap.mmap(-1, 4 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            touch(own, 0, 4 * MiB, 10 + number)
            touch(anonymous, (16 + number) * MiB, 1 * MiB, 20 + number)
            signal.pause()
            os._exit(0)
        workers.append(pid)
    time.sleep(0.5)  # let the workers write their pages before the test measures
    print("ready", os.getpid(), *workers, flush=True)
    signal.pause()


if __name__ == "__main__":
    sys.exit(main())
