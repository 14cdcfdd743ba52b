"""What every process capplan starts gets: a way to die with capplan, a bounded stderr tail,
and a one-line error (never a traceback) when it cannot be started at all.

capplan cleans up after itself on a normal end, an error, SIGINT and SIGTERM; SIGKILL runs
no handler. For that case each process capplan starts asks the kernel, between fork and
exec, to SIGKILL it when capplan goes (``PR_SET_PDEATHSIG``, Linux 2.1.57+). The kernel
sends that signal when the *thread* that forked exits, not the process, so it is set only
on children forked from the main thread (capplan reads /proc on helper threads, which never
start processes). It applies to the first process only (a fork clears it, and so does the
exec of a set-user-ID program); the rest of an instance's tree is in its cgroup, which the
next capplan run reaps (``capacity.measure.leftovers``).

A child's stderr goes to a pipe that a thread of capplan drains into a ring of the last
``STDERR_TAIL_BYTES`` bytes: nothing is written to disk, a child writing in a loop costs a
fixed amount of memory, and a child is never blocked on a full pipe while capplan samples.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from capacity.errors import LaunchError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STDERR_TAIL_BYTES = 64 * 1024
_READ_CHUNK = 65536
_POLL_SECONDS = 0.2


@functools.cache
def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up in the parent (a child of a threaded parent must not dlopen)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_int
    return function


def die_with_parent() -> Callable[[], None] | None:
    """A function for the child (call it in ``preexec_fn``) that makes the kernel SIGKILL
    it when capplan dies; None where that cannot work (not Linux, or not the main thread).

    A parent that dies between fork and prctl would leave the child without the signal:
    the child then finds another parent and kills itself before it execs.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = _load_prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def in_child() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0) != 0:
            return
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return in_child


def start_failure(
    argv: Sequence[str], err: BaseException, option: str = "the command"
) -> LaunchError:
    """The one-line error for a program the kernel would not start."""
    program = argv[0] if argv else ""
    code = err.errno if isinstance(err, OSError) else None
    if code == errno.ENOENT:
        if "/" not in program:
            return LaunchError(
                f"command not found: {program}",
                hint="give the full path, or pass --shell to run the line with /bin/sh -c",
            )
        if os.path.lexists(program):
            return LaunchError(
                f"cannot execute {program}: the interpreter named on its #! line does not exist",
                hint=f"fix the first line of {program}, or run it through its interpreter",
            )
        return LaunchError(
            f"cannot execute {program}: no such file",
            hint=f"check the path given in {option}",
        )
    if code in (errno.EACCES, errno.EPERM):
        return LaunchError(
            f"cannot execute {program}: permission denied",
            hint="it must be a regular file with the execute bit (chmod +x), on a file "
            "system not mounted noexec, readable by the user capplan runs as",
        )
    if code == errno.ENOEXEC:
        return LaunchError(
            f"cannot execute {program}: the kernel does not recognise it as a program "
            "(exec format error)",
            hint="a script needs a #! line; or pass --shell to run the line with /bin/sh -c",
        )
    if isinstance(err, OSError):
        detail = err.strerror or str(err)
    else:
        detail = str(err) or type(err).__name__
    return LaunchError(
        f"cannot start {program}: {detail}",
        hint=f"check that {option} runs by hand as the user capplan runs as",
    )


class StreamTail:
    """The last ``limit`` bytes written to a pipe, drained by a thread of its own.

    The thread owns the read end and closes it when it ends (at end of file, or soon after
    ``close``), so the descriptor is never closed under a read in progress.
    """

    def __init__(self, fd: int, name: str, limit: int = STDERR_TAIL_BYTES) -> None:
        self._fd = fd
        self._limit = limit
        self._buffer = bytearray()
        self._total = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._drain, name=f"capplan-{name}", daemon=True)
        self._thread.start()

    @classmethod
    def pipe(cls, name: str, limit: int = STDERR_TAIL_BYTES) -> tuple[StreamTail, int]:
        """A new tail and the write end to hand to the child (close it after the fork)."""
        read, write = os.pipe2(os.O_CLOEXEC)
        return cls(read, name, limit), write

    def _drain(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    ready, _, _ = select.select([self._fd], [], [], _POLL_SECONDS)
                    if not ready:
                        continue
                    chunk = os.read(self._fd, _READ_CHUNK)
                except InterruptedError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    self._total += len(chunk)
                    self._buffer += chunk
                    excess = len(self._buffer) - self._limit
                    if excess > 0:
                        del self._buffer[:excess]
        finally:
            os.close(self._fd)
            self._done.set()

    def data(self, wait: float = 0.0) -> bytes:
        """What is kept; ``wait`` seconds at most for the writers to finish first (a child
        that just exited may still have bytes in the pipe)."""
        if wait > 0:
            self._done.wait(wait)
        with self._lock:
            return bytes(self._buffer)

    @property
    def total_bytes(self) -> int:
        """How much was written in all (kept or not)."""
        with self._lock:
            return self._total

    def close(self, timeout: float = 1.0) -> None:
        """Stop draining (what a child writes later gets EPIPE) and end the thread."""
        self._stop.set()
        self._thread.join(timeout)


def popen(
    argv: Sequence[str],
    *,
    option: str = "the command",
    preexec: Callable[[], None] | None = None,
    **kwargs: object,
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` that asks for PR_SET_PDEATHSIG (after ``preexec``, if given)
    and turns a program that cannot be started into a LaunchError."""
    dies = die_with_parent()

    def in_child() -> None:
        if preexec is not None:
            preexec()
        if dies is not None:
            dies()

    try:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            list(argv),
            # Our helper threads only sit in select, read or waitpid, and the child runs
            # nothing that takes a lock they could hold (libc's prctl was looked up here).
            preexec_fn=in_child,  # noqa: PLW1509
            **kwargs,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise start_failure(argv, err, option) from None
