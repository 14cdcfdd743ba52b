"""Command templates, and the load generator capplan runs while it samples (``--load``).

A worker's cost depends on what it has served: measured idle, it still shares the pages it
inherited; under load it copies them. ``--load "ab -n 20000 -c 16 http://127.0.0.1:8080/"``
runs the command in a session of its own while capplan samples, and stops it (SIGTERM,
then SIGKILL after a grace period) however the run ends. Its processes are never part of
the workload: the sampler excludes every member of its session.

Commands are split with shlex and run without a shell unless ``--shell`` is given, so a
process name or a port number can never turn into shell syntax. ``{i}`` (the instance
number) and ``{port}`` (the instance's loopback port) are substituted after splitting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from capacity.errors import LaunchError
from capacity.measure.children import StreamTail, popen
from capacity.measure.procfs import DEFAULT_ROOT
from capacity.measure.procparse import ProcStat
from capacity.measure.workload import scan, stop_process_group
from capacity.records import LoadRun

PLACEHOLDERS = ("{i}", "{port}")
SHELL = "/bin/sh"
STDERR_TAIL_LINES = 5
STDERR_TAIL_WIDTH = 200

# Load generators whose ``-n`` option is the total number of requests.
_REQUEST_COUNT_TOOLS = {"ab", "ab2", "hey"}


def expand(
    template: str, *, shell: bool, option: str, values: dict[str, int] | None = None
) -> tuple[str, ...]:
    """The argv for ``template`` with ``{i}`` and ``{port}`` replaced by ``values``.

    Only these two placeholders are touched (str.format would choke on awk or JSON braces).
    A placeholder with no value is an error, not a literal ``{port}`` passed on.
    """
    values = values or {}
    for placeholder in PLACEHOLDERS:
        if placeholder in template and placeholder[1:-1] not in values:
            raise LaunchError(
                f"{option} uses {placeholder}, which only --launch defines",
                hint="write the real port, or measure with --launch so capplan picks one",
            )

    def fill(text: str) -> str:
        for name, value in values.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    if shell:
        if not template.strip():
            raise LaunchError(f"{option} is empty")
        return (SHELL, "-c", fill(template))
    try:
        parts = shlex.split(template)
    except ValueError as err:
        raise LaunchError(
            f"cannot split {option} {template!r}: {err}",
            hint="check the quotes, or pass --shell to run it with /bin/sh -c",
        ) from None
    if not parts:
        raise LaunchError(f"{option} is empty")
    return tuple(fill(part) for part in parts)


def request_count(argv: tuple[str, ...]) -> int | None:
    """The total number of requests when the command says it (``ab -n N``, ``hey -n N``)."""
    words = list(argv)
    if len(words) >= 3 and words[0] == SHELL and words[1] == "-c":
        try:
            words = shlex.split(words[2])
        except ValueError:
            return None
    if not words or os.path.basename(words[0]) not in _REQUEST_COUNT_TOOLS:
        return None
    for index, word in enumerate(words[1:], start=1):
        text = None
        if word == "-n" and index + 1 < len(words):
            text = words[index + 1]
        elif word.startswith("-n") and word[2:].isdigit():
            text = word[2:]
        if text is not None and text.isdigit():
            return int(text)
    return None


def tail(data: bytes) -> str:
    """The last lines of a captured stderr, for an error message: ``a | b | c``."""
    data = data[-8192:]
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines()]
    lines = [line[:STDERR_TAIL_WIDTH] for line in lines if line][-STDERR_TAIL_LINES:]
    return " | ".join(lines)


def describe_status(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


@contextlib.contextmanager
def deferred_signals() -> Iterator[set[int | signal.Signals]]:
    """Hold SIGINT and SIGTERM until the block ends.

    Around starting a process: a Ctrl-C between fork and our bookkeeping would orphan it.
    Around cleanup: a second Ctrl-C must not cut the cleanup short. The signals are
    delivered (and unwind as usual) when the block ends. Yields the previous mask, which a
    child must restore before exec (a blocked mask survives exec).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield previous
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclasses.dataclass
class LoadGenerator:
    """One running load generator; its end time is recorded by a watcher thread."""

    command: tuple[str, ...]
    shell: bool
    instance: int | None
    process: subprocess.Popen[bytes]
    stderr: StreamTail
    started_at: float
    ended_at: float | None = None
    stopping_at: float | None = None
    _watcher: threading.Thread | None = None

    def watch(self) -> None:
        def wait() -> None:
            self.process.wait()
            self.ended_at = time.time()

        self._watcher = threading.Thread(target=wait, name="capplan-load-watch", daemon=True)
        self._watcher.start()

    def pids(self, stats: dict[int, ProcStat]) -> set[int]:
        """Its processes: everything in the session it leads (it was started with setsid)."""
        return {pid for pid, stat in stats.items() if stat.session == self.process.pid} | {
            self.process.pid
        }

    def finished_on_its_own(self) -> bool:
        return self.ended_at is not None and (
            self.stopping_at is None or self.ended_at <= self.stopping_at
        )

    def record(self) -> LoadRun:
        own = self.finished_on_its_own()
        return LoadRun(
            command=self.command,
            shell=self.shell,
            instance=self.instance,
            requests=request_count(self.command),
            started_at=self.started_at,
            ended_at=self.ended_at if own else None,
            exit_status=self.process.returncode if own else None,
            stderr_tail=tail(self.stderr.data(wait=0.5)) if own and self.process.returncode else "",
        )

    def stop(self, grace: float) -> None:
        if self.stopping_at is None:
            self.stopping_at = time.time()
        stop_process_group(self.process, grace)
        if self._watcher is not None:
            self._watcher.join(timeout=grace)
        self.stderr.close()


def start_process(
    argv: tuple[str, ...],
    *,
    name: str,
    mask: set[int | signal.Signals],
    join: Callable[[], None] | None = None,
    option: str = "the command",
) -> tuple[subprocess.Popen[bytes], StreamTail]:
    """Start ``argv`` in a session of its own; returns it and the tail of its stderr.

    Call it inside ``deferred_signals()`` and record the process before the block ends, so
    that no Ctrl-C can land between fork and the bookkeeping that stops it later. ``mask``
    is the mask to restore in the child before exec; ``join`` also runs there (to enter a
    cgroup before the program allocates anything). The child is SIGKILLed by the kernel
    if capplan dies (PR_SET_PDEATHSIG, see ``capacity.measure.children``); its stdout goes
    to /dev/null and its stderr to a bounded ring in memory, never to disk.
    """

    def in_child() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if join is not None:
            join()

    stderr, write_end = StreamTail.pipe(name)
    try:
        process = popen(
            argv,
            option=option,
            preexec=in_child,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            start_new_session=True,
        )
    except BaseException:
        os.close(write_end)
        stderr.close()
        raise
    os.close(write_end)
    return process, stderr


class LoadGenerators:
    """Every load generator of a run, stopped together (``close``) however the run ends."""

    def __init__(self, template: str, *, shell: bool, grace: float = 3.0) -> None:
        self.template = template
        self.shell = shell
        self.grace = grace
        self.running: list[LoadGenerator] = []

    def start(self, values: dict[str, int] | None = None, instance: int | None = None) -> None:
        argv = expand(self.template, shell=self.shell, option="--load", values=values)
        with deferred_signals() as previous:
            started = time.time()
            process, stderr = start_process(
                argv, name=f"load-{len(self.running) + 1}", mask=previous, option="--load"
            )
            generator = LoadGenerator(
                command=argv,
                shell=self.shell,
                instance=instance,
                process=process,
                stderr=stderr,
                started_at=started,
            )
            self.running.append(generator)
            generator.watch()

    def exclude(self, root: Path = DEFAULT_ROOT) -> frozenset[int]:
        """Pids that belong to load generators: never part of the workload."""
        if not self.running:
            return frozenset()
        stats = scan(root)
        found: set[int] = set()
        for generator in self.running:
            found |= generator.pids(stats)
        return frozenset(found)

    def records(self) -> tuple[LoadRun, ...]:
        return tuple(generator.record() for generator in self.running)

    def stop(self) -> tuple[LoadRun, ...]:
        """Stop them all and return what they did (call once sampling is over)."""
        now = time.time()
        for generator in self.running:
            if generator.stopping_at is None:
                generator.stopping_at = now
        with deferred_signals():
            for generator in self.running:
                generator.stop(self.grace)
        return self.records()

    def close(self) -> None:
        with deferred_signals():
            for generator in self.running:
                generator.stop(self.grace)

    def __enter__(self) -> LoadGenerators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
