"""The exceptions capplan raises, one class per situation a caller must tell apart.

Every message is one line meant for an operator; ``hint`` says what to do next. The CLI
prints ``Error: <message>`` and ``Hint: <hint>`` on stderr and exits 2 (see ``cli.main``).
Vanished, zombie and forbidden processes are distinct classes, as in psutil, because the
sampler treats them differently: a vanished worker is normal churn and is counted, a
forbidden one would make the sum silently wrong and is fatal.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # records defines every dataclass: too slow an import for ``--help``
    from capacity.records import ExactFallback, FallbackCause


class CapplanError(Exception):
    """Base class: a problem the user can act on, with an optional hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ProcessError(CapplanError):
    """Something about one process; carries its pid and, when known, its name."""

    def __init__(
        self, pid: int, name: str | None = None, message: str = "", hint: str | None = None
    ) -> None:
        label = f"pid {pid}" + (f" ({name})" if name else "")
        super().__init__(f"{label}: {message}" if message else label, hint)
        self.pid = pid
        self.name = name


class NoSuchProcess(ProcessError):
    """The process exited (or its pid was reused) between listing and reading."""

    def __init__(
        self, pid: int, name: str | None = None, message: str = "process vanished"
    ) -> None:
        super().__init__(pid, name, message)


class KernelThread(NoSuchProcess):
    """A kernel thread: it has no user memory, so it is never part of a workload."""

    def __init__(self, pid: int, name: str | None = None) -> None:
        super().__init__(pid, name, "kernel thread: it has no user memory")


class ReplacedProcess(NoSuchProcess):
    """The pid now belongs to another process: its start time in /proc/PID/stat changed."""

    def __init__(self, pid: int, name: str | None = None) -> None:
        super().__init__(pid, name, "replaced by a new process with the same pid")


class ZombieProcess(NoSuchProcess):
    """The process has exited but was not reaped: it holds no user memory any more."""

    def __init__(self, pid: int, name: str | None = None, ppid: int | None = None) -> None:
        super().__init__(pid, name, "zombie (exited, not yet reaped by its parent)")
        self.ppid = ppid


class AccessDenied(ProcessError):
    """The kernel refused to show this process's memory to us."""

    def __init__(self, pid: int, name: str | None = None, path: str | None = None) -> None:
        what = f"permission denied reading {path}" if path else "permission denied"
        if os.geteuid() == 0:
            # Root is refused too where the process is outside our user namespace, or a
            # security module or ptrace policy (Yama ptrace_scope 3) forbids the access.
            hint = (
                "capplan already runs as root: the kernel refuses access to this process "
                "(another user or PID namespace, or a security module or ptrace policy); "
                "measure a workload capplan may read, from the namespace it runs in"
            )
        else:
            hint = (
                "run capplan as the workload's user or as root; workers that drop privileges "
                "are unreadable even to their own user, so prefer: sudo capplan ..."
            )
        super().__init__(pid, name, what, hint=hint)
        self.path = path


class ParseError(CapplanError):
    """A /proc or cgroup file is not in the shape this kernel was expected to give."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"cannot parse {path}: {detail}",
            hint="this kernel's format is unexpected; please report it with `uname -r`",
        )
        self.path = path
        self.detail = detail


class SelectionError(CapplanError):
    """The selector (--cmd, --pid) matched nothing usable."""


class BudgetError(CapplanError):
    """No usable memory budget: a bad --memory or --reserve, or no room at all."""


class PlanError(CapplanError):
    """``capplan plan`` cannot combine these models: an unknown pool in --set or --weight,
    a bad count or weight, two pools of one name, models no one host can run together."""


class ModelError(CapplanError):
    """The measurements cannot support a model (no workers, zero-size workers...)."""


class ModelFileError(CapplanError):
    """A saved model file is missing, corrupt, or of a schema this capplan cannot read."""

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint)
        self.path = path
        self.reason = reason


class LaunchError(CapplanError):
    """A workload capplan started died early or never became ready."""


class ExactUnavailable(CapplanError):
    """The exact page tier cannot run here; ``fallback`` says why (capplan falls back to smaps).

    No /proc/kpageflags (a kernel without CONFIG_PROC_PAGE_MONITOR), kpagecount readable by
    root only, pagemap frame numbers hidden from a reader without CAP_SYS_ADMIN, a workload
    over the gentle thresholds, or a parent lost during the walk: ``fallback.cause`` tells
    them apart, so no caller reads the words to decide what to say next.
    """

    def __init__(self, fallback: ExactFallback) -> None:
        super().__init__(
            f"exact page accounting is not available: {fallback.reason}",
            hint=fallback.hint
            or "run capplan as root (CAP_SYS_ADMIN) for the exact method, or pass --method smaps",
        )
        self.fallback = fallback

    @property
    def reason(self) -> str:
        return self.fallback.reason

    @classmethod
    def because(
        cls, cause: FallbackCause, reason: str, hint: str | None = None
    ) -> ExactUnavailable:
        from capacity.records import ExactFallback

        return cls(ExactFallback(cause=cause, reason=reason, hint=hint))


class Terminated(BaseException):
    """SIGTERM arrived: unwind so that every `finally` stops what capplan started.

    A BaseException, so that no ``except Exception`` swallows it.
    """


class Interrupted(BaseException):
    """Ctrl-C arrived: unwind the same way."""
